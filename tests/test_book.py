"""The book (``make book``) built from a tiny fixture and opened in headless Chromium.

CI has no ``make repro`` outputs, so the fixture makes them small: two untrained models of the
tiny profile (a conventional CNN and a B-cos CNN) saved as the train stage saves them, their
``explanations.pt`` written with the explain stage's keys from the library's ``explain``, and
one executed stage notebook with a text and an image output.  The README, docs/, figures/ and
tutorials are the project's own, so a broken link or image among them fails here too.

Chromium is Debian's ``chromium`` + ``chromium-driver``, installed by ``make test`` (the
``browser`` target, as root); the test skips only where it cannot be installed (not root and
not installed), and never on CI.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bcos_lib import book
from bcos_lib.browser import chromium_available, chromium_driver, explorer_states, page_problems

REPO = Path(__file__).resolve().parents[1]
KEYS = ("std_cnn", "bcos_cnn")


def _chromium_or_skip() -> None:
    browser, driver = chromium_available()
    if browser and driver:
        return
    missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
    if os.environ.get("CI") or os.geteuid() == 0:
        pytest.fail(f"{missing} missing: `make test` installs Debian's chromium and chromium-driver as root")
    pytest.skip(f"{missing} not installed and this user cannot install it "
                "(as root: apt-get install chromium chromium-driver)")


def _fixture(tmp: Path) -> Path:
    """results/ and models/ as a tiny `dvc repro` would leave them (what the book reads)."""
    import nbformat

    from bcos_lib.core.config import load_params
    from bcos_lib.explain import explain
    from bcos_lib.models.base import prepare_input
    from bcos_lib.core.pipeline import save_model
    from bcos_lib.core.registry import create_model

    params = load_params(REPO / "params.yaml", "tiny")
    torch.manual_seed(0)
    images = torch.rand(3, 1, 28, 28)
    labels = torch.tensor([0, 1, 2])
    classes = [f"class {i}" for i in range(10)]
    for key in KEYS:
        entry = params.model(key)
        model = create_model(entry.arch, **dict(entry.kwargs)).eval()
        save_model(model, tmp / "models" / f"{key}.pt")
        x = prepare_input(model, images)
        e = explain(model, x).squeeze_targets()
        multi = explain(model, x[:2], targets=e.logits[:2].topk(3, dim=1).indices)
        out = tmp / "results" / "explain" / key
        out.mkdir(parents=True)
        torch.save({"key": key, "label": entry.label or key, "indices": torch.arange(3), "images": images,
                    "labels": labels, "classes": classes, "logits": e.logits, "targets": e.targets,
                    "contribution_map": e.contribution_map, "rgba": e.rgba,
                    "multi": {"targets": multi.targets, "contribution_map": multi.contribution_map, "rgba": multi.rgba},
                    "layers": {}, "explainable": bool(getattr(model, "explainable", False))}, out / "explanations.pt")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    png = __import__("base64").b64encode(book.render_image(images[0].numpy())).decode()
    nb.cells = [nbformat.v4.new_markdown_cell("# 20 · Train\n\nA stage notebook as the runner leaves it."),
                nbformat.v4.new_code_cell("print('trained')", execution_count=1, outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="trained\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})])]
    (tmp / "results" / "notebooks").mkdir(parents=True)
    nbformat.write(nb, tmp / "results" / "notebooks" / "20_train_std_cnn.ipynb")
    return tmp


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp = _fixture(tmp_path_factory.mktemp("book-fixture"))
    out = tmp_path_factory.mktemp("book")
    book.build_book(REPO, out, tmp / "results" / "notebooks", tmp / "no-tutorials", tmp / "results" / "explain",
                    tmp / "models", n_images=2, log=lambda s: None)
    return out / "html"


@pytest.mark.slow  # builds the book (~45 s on 2 cores)
def test_the_book_holds_every_part(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts}
    assert {"index.html", "README.html", "explorer.html", "notebooks/stages/index.html",
            "notebooks/stages/20_train_std_cnn.html"} <= pages, sorted(pages)
    tutorials = sorted(p.stem for p in (REPO / "notebooks" / "tutorials").glob("[0-9]*.ipynb"))
    assert tutorials and all(f"notebooks/tutorials/{t}.html" in pages for t in tutorials)
    docs = sorted(p.stem for p in (REPO / "docs").glob("*.md"))
    assert all(f"docs/{d}.html" in pages for d in docs), (docs, sorted(pages))
    # the stage notebook's outputs are shown, not re-executed: its image is in the page
    stage = (site / "notebooks" / "stages" / "20_train_std_cnn.html").read_text()
    assert "trained" in stage and "<img" in stage


@pytest.mark.slow  # builds the book (~45 s on 2 cores)
def test_the_explorer_index_has_every_class_and_attribution_where_a_model_was_there(site):
    text = (site / "_static" / "explorer" / "index.js").read_text()
    index = json.loads(text.split("=", 1)[1].rstrip().rstrip(";"))
    models = {m["key"]: m for m in index["models"]}
    assert set(models) == set(KEYS) and all(m["computed"] for m in models.values())
    # the conventional CNN has no own explanation; the B-cos CNN has it, and the post-hoc attributions
    std, bcos = models["std_cnn"]["images"][0]["maps"], models["bcos_cnn"]["images"][0]["maps"]
    assert len(std) == len(bcos) == 10
    assert "own" not in std["3"] and {"ixg", "ig", "gradcam", "occlusion"} <= set(std["3"])
    assert {"own", "ixg", "ig", "gradcam", "occlusion"} <= set(bcos["3"])
    for m in models.values():
        for im in m["images"]:
            assert len(im["logits"]) == 10 and (site / "_static" / "explorer" / im["src"]).is_file()
            for per_class in im["maps"].values():
                assert all((site / "_static" / "explorer" / e["src"]).is_file() for e in per_class.values())


def test_a_map_is_red_for_and_blue_against_the_class():
    from PIL import Image
    import io

    v = torch.zeros(28, 28)
    v[:14] = 1.0
    v[14:] = -1.0
    png, lim = book.render_map(v.numpy())
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    top, bottom = a[0, 0], a[-1, 0]
    assert lim == pytest.approx(1.0)
    assert top[0] > 200 and top[2] < 60, top       # red: for the class
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue: against it


@pytest.fixture(scope="module")
def driver():
    _chromium_or_skip()
    d = chromium_driver()
    yield d
    d.quit()


@pytest.mark.slow  # builds the book (~45 s on 2 cores)
def test_every_page_loads_with_no_missing_image_script_or_link(site, driver):
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    broken = {p.relative_to(site).as_posix(): page_problems(driver, p.resolve().as_uri()) for p in pages}
    broken = {k: v for k, v in broken.items() if v}
    assert not broken, json.dumps(broken, indent=1)
    # the landing page shows the README's pictures, loaded
    driver.get((site / "README.html").resolve().as_uri())
    loaded = driver.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length;")
    assert loaded >= 1


@pytest.mark.slow  # builds the book (~45 s on 2 cores)
def test_the_explorer_switches_images_when_its_controls_change(site, driver):
    states = explorer_states(driver, (site / "explorer.html").resolve().as_uri())
    changes = [s["change"] for s in states]
    assert changes == ["opened", "ex-attribution", "ex-class", "ex-image", "ex-model"], states
    for s in states:
        assert s["img_ok"] and s["map_ok"] and s["logits"] == 10, s
    for before, after in zip(states, states[1:]):
        assert after["map"] != before["map"], (before, after)  # every control changes the explanation shown
    assert states[3]["img"] != states[2]["img"]  # another image
    assert states[4]["img"] != states[3]["img"] and "std_cnn/" in states[4]["img"] + states[3]["img"]


@pytest.mark.slow  # builds the book (~45 s on 2 cores)
def test_screenshots_of_the_landing_page_and_the_explorer(site, driver):
    from bcos_lib.browser import screenshots

    out = Path(os.environ["BCOS_OUTPUT_ROOT"]) / "book-screenshots"
    paths = screenshots(site, out, driver)
    from PIL import Image

    for p in paths:
        im = Image.open(p)
        assert im.size[0] >= 1000 and len(np.unique(np.asarray(im.convert("L")))) > 20, p  # a page, not a blank


def test_every_relative_link_of_the_readme_and_docs_exists():
    """What the book cannot check for the files it does not copy (GitHub shows the README and
    docs/ too): every relative link or image of README.md and docs/*.md names a file of the
    repository."""
    import re

    missing = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:|#", target):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(REPO)}: {target}")
    assert not missing, missing


def test_the_page_check_finds_what_is_broken(tmp_path, driver):
    """The checks above can fail: a page with a missing image, a missing script, a link to a
    missing page and a script from the network is reported on each count."""
    (tmp_path / "ok.html").write_text("<html><body>fine</body></html>")
    (tmp_path / "page.html").write_text(
        '<html><head><script src="gone.js"></script><script src="https://cdn.example.org/x.js"></script></head>'
        '<body><img src="gone.png"><a href="ok.html">fine</a><a href="nowhere.html">broken</a></body></html>')
    problems = "\n".join(page_problems(driver, (tmp_path / "page.html").as_uri()))
    assert "image did not load" in problems and "gone.png" in problems, problems
    assert "script file missing" in problems and "gone.js" in problems, problems
    assert "internal link to a missing file" in problems and "nowhere.html" in problems, problems
    assert "ok.html" not in problems, problems
    assert "cdn.example.org" in problems, problems
    assert page_problems(driver, (tmp_path / "ok.html").as_uri()) == []


def test_a_link_back_to_the_readme_does_not_copy_it_over_the_landing_page(tmp_path):
    """docs/ pages link to ../README.md; the README is the book's landing page, written by the book
    itself with its table of contents, so it is not copied as one more document (Sphinx would warn
    of a table of contents that holds its own page)."""
    root, src = tmp_path / "repo", tmp_path / "src"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# the project\n")
    (root / "docs" / "a.md").write_text("[back](../README.md) and [b](b.md)\n")
    (root / "docs" / "b.md").write_text("# b\n")
    (src / "docs").mkdir(parents=True)
    extra = book._copy_linked_files(root, src, [root / "docs" / "a.md"])
    assert extra == ["docs/b"] and not (src / "README.md").exists()


def test_the_figures_notebook_shows_the_report_with_links_from_its_own_folder(tmp_path):
    from types import SimpleNamespace

    from bcos_lib.stages.figures import report_as_shown
    run = SimpleNamespace(path=lambda *parts: tmp_path.joinpath(*parts))
    report = tmp_path / "results" / "report.md"
    report.parent.mkdir()
    report.write_text("![gate matrix](figures/csg_gate_matrix.png) and `figures/x.png`\n")
    assert report_as_shown(run, report) == "![gate matrix](../../figures/csg_gate_matrix.png) and `figures/x.png`\n"
