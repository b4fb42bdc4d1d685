"""The companion as a book: a static HTML site of the README, ``docs/``, the executed notebooks
and an explanation explorer (``make book``; ``python -m bcos_lib.book --help``).

Nothing is executed here: the stage notebooks are the ones the last ``dvc repro`` wrote
(``results/notebooks/``), the tutorials the ones ``make tutorials`` executed
(``results/tutorials/``; the unexecuted sources stand in for any that is missing).  Sphinx
with MyST-NB (``nb_execution_mode = "off"``) and sphinx-book-theme turns them into HTML
without the network: the theme's assets ship in its Python package.

The explanation explorer (``explorer.html``) is plain HTML and JavaScript over pre-rendered
PNGs.  For each model with ``results/explain/<key>/explanations.pt`` (the explain stage) it
shows the stored test images, their logits and the model's own explanation of its predicted
class (``contribution_map`` = Σ_channels W(x) ⊙ x, B-cos v2 §3; the colour explanation of
B-cos v1 §3.5 where stored).  The explain stage stores no post-hoc attribution and only the
predicted class (and the top classes of two images), so where ``models/<key>.pt`` is present
the maps of every class and every attribution of :mod:`bcos_lib.explain` (the
model's own ``W(x) ⊙ x`` and captum's post-hoc attributions, as the grid pointing game of CoDA Nets
§5.1 uses them) are computed here, for the first ``n_images`` images.  Each map is drawn as in
the notebooks: red for the class, blue against it, symmetric at the 99.5th percentile of |map|.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["render_map", "render_image", "render_rgba", "build_explorer", "stage_sources", "build_book", "main"]

#: the explorer's files inside the site: ``_static/explorer/``
EXPLORER_DIR = "explorer"
#: the scale of the 28×28 images in the explorer's PNGs (nearest neighbour)
SCALE = 6
#: the order of the docs/ pages in the book's table of contents (others follow, alphabetically)
DOCS_ORDER = ["bcos", "bcosification", "coda", "discover", "csg", "results", "metrics", "tutorials", "pipeline",
              "speed", "troubleshooting", "extending", "book"]
STAGE_TITLES = {"10": "Data", "20": "Train", "30": "Explain", "40": "Evaluate", "50": "Figures"}


# ----------------------------------------------------------------------------- rendering
def _png(rgb: np.ndarray) -> bytes:
    """(H, W, 3|4) floats in [0, 1] → PNG bytes, each pixel a SCALE×SCALE block."""
    from PIL import Image

    a = np.clip(np.asarray(rgb, dtype=np.float64), 0, 1)
    a = np.repeat(np.repeat(a, SCALE, 0), SCALE, 1)
    buf = io.BytesIO()
    Image.fromarray((a * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render_image(image: Any) -> bytes:
    """An input image (C, H, W) in [0, 1] (grey or RGB) as PNG bytes."""
    im = np.asarray(image, dtype=np.float64)
    im = np.repeat(im, 3, 0) if im.shape[0] == 1 else im[:3]
    return _png(im.transpose(1, 2, 0))


def render_map(values: Any, percentile: float = 99.5) -> tuple[bytes, float]:
    """A signed (H, W) map as PNG bytes and the value that saturates the colours: red (> 0)
    speaks for the class, blue (< 0) against it, white is 0 — the ``bwr`` colours of the
    notebooks' figures, symmetric at the ``percentile`` of |map|."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    lim = float(np.percentile(np.abs(v), percentile)) if v.size else 0.0
    lim = lim if lim > 0 else 1.0
    return _png(colormaps["bwr"]((v / lim + 1) / 2)[..., :3]), lim


def render_rgba(rgba: Any) -> bytes:
    """A colour explanation (H, W, 4), composited over black as the notebooks show it."""
    a = np.asarray(rgba, dtype=np.float64)
    return _png(a[..., :3] * a[..., 3:4])


# ----------------------------------------------------------------------------- the explorer
def _attribution_maps(model_path: Path, saved: dict[str, Any], n_images: int, params: Any,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """{attribution: (n, K, H, W) maps} for every class of the first ``n_images`` stored images."""
    import torch

    from .explain import attribute, config_options, get_attribution, list_attributions, quiet_evaluation
    from .layers.explanation_mode import is_explainable
    from .models.base import prepare_input
    from .core.pipeline import load_model

    model = load_model(model_path)
    images = saved["images"][:n_images].float()
    x = prepare_input(model, images)
    n_classes = int(saved["logits"].shape[1])
    targets = torch.arange(n_classes).expand(len(x), n_classes)
    with torch.no_grad(), quiet_evaluation(model):
        logits = model(x)
    stored = saved["logits"][:n_images].float()
    if not torch.allclose(logits, stored, rtol=1e-3, atol=1e-3 * float(stored.abs().max().clamp_min(1))):
        log(f"  {model_path.name}: its logits differ from the stored ones (max |Δ| "
            f"{float((logits - stored).abs().max()):.3g}); not using it")
        return {}
    out: dict[str, Any] = {}
    for name in list_attributions():
        if get_attribution(name).needs_dynamic_linear and not is_explainable(model):
            continue
        opts = {}
        if params is not None:
            try:
                opts = config_options(name, params.evaluate)
            except Exception:  # noqa: BLE001 - an attribution without settings in params.yaml runs on its defaults
                opts = {}
        t0 = time.perf_counter()
        try:
            out[name] = attribute(model, x, targets, name, **opts).detach().cpu().numpy()
        except Exception as e:  # noqa: BLE001 - one attribution that cannot run on a model leaves the others
            log(f"  {model_path.stem}: {name} not computed ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        log(f"  {model_path.stem}: {name} for {len(x)} images × {n_classes} classes "
            f"({time.perf_counter() - t0:.1f} s)")
    return out


def build_explorer(explain_dir: Path, models_dir: Path | None, out: Path, n_images: int = 4,
                   params: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Render the explorer's PNGs and its index (``out/index.js``) from the explain stage's files.

    ``out`` gets ``<key>/img_<i>.png`` (the images), ``<key>/<i>_<class>_<attribution>.png`` (the
    maps) and ``<key>/<i>_<class>_colour.png`` (stored colour explanations).  Returns the index:
    per model its label, classes, and per image the true label, the logits and the available
    maps by class and attribution.
    """
    from .explain import attribution_label
    from .core.utils import safe_torch_load

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index: dict[str, Any] = {"models": [], "attributions": {}}
    for f in sorted(Path(explain_dir).glob("*/explanations.pt")):
        saved = safe_torch_load(f)
        key = str(saved.get("key", f.parent.name))
        mdir = out / key
        mdir.mkdir()
        images, logits = saved["images"], saved["logits"].float()
        classes = [str(c) for c in saved["classes"]]
        model_file = Path(models_dir) / f"{key}.pt" if models_dir is not None else None
        computed: dict[str, Any] = {}
        if model_file is not None and model_file.is_file():
            computed = _attribution_maps(model_file, saved, n_images, params, log)
        n_shown = len(images) if not computed else min(len(images), n_images)
        entry: dict[str, Any] = {"key": key, "label": str(saved.get("label") or key),
                                 "explainable": bool(saved.get("explainable")), "classes": classes,
                                 "computed": bool(computed), "images": []}
        for i in range(n_shown):
            (mdir / f"img_{i}.png").write_bytes(render_image(images[i].float().numpy()))
            maps: dict[str, dict[str, Any]] = {}

            def add(cls: int, attribution: str, png: bytes, scale: float | None) -> None:
                name = f"{i}_{cls}_{attribution}.png"
                (mdir / name).write_bytes(png)
                maps.setdefault(str(cls), {})[attribution] = {"src": f"{key}/{name}", "scale": scale}

            for attribution, arr in computed.items():
                for c in range(len(classes)):
                    png, lim = render_map(arr[i, c])
                    add(c, attribution, png, lim)
                index["attributions"][attribution] = attribution_label(attribution)
            # what the explain stage stored: its own map of the predicted class (and of the top
            # classes of the first images), the colour explanation where the model has one
            own = "own" if saved.get("explainable") else "ixg"
            stored = [(int(saved["targets"][i]), saved["contribution_map"][i],
                       None if saved.get("rgba") is None else saved["rgba"][i])]
            multi = saved.get("multi") or {}
            if i < len(multi.get("targets", [])):
                for t in range(multi["targets"].shape[1]):
                    stored.append((int(multi["targets"][i, t]), multi["contribution_map"][i, t],
                                   None if multi.get("rgba") is None else multi["rgba"][i, t]))
            for cls, cmap, rgba in stored:
                if own not in maps.get(str(cls), {}):
                    png, lim = render_map(cmap.float().numpy())
                    add(cls, own, png, lim)
                    index["attributions"].setdefault(own, attribution_label(own))
                if rgba is not None and "colour" not in maps.get(str(cls), {}):
                    add(cls, "colour", render_rgba(rgba.float().numpy()), None)
                    index["attributions"]["colour"] = "colour explanation (own)"
            lg = logits[i]
            entry["images"].append({"index": int(saved["indices"][i]) if "indices" in saved else i,
                                    "src": f"{key}/img_{i}.png", "label": int(saved["labels"][i]),
                                    "pred": int(lg.argmax()), "logits": [round(float(v), 4) for v in lg],
                                    "maps": maps})
        index["models"].append(entry)
        log(f"explorer: {key}: {n_shown} images, "
            f"{'every class and attribution' if computed else 'the stored explanations only (no model file)'}")
    (out / "index.js").write_text("// generated by bcos_lib.book: the explorer's index\nwindow.EXPLORER = "
                                  + json.dumps(index, separators=(",", ":")) + ";\n")
    return index


EXPLORER_PAGE = """# Explanation explorer

Pick a model, one of its test images, a class and an explanation. The image, the
explanation and the class logit are shown side by side; the bars list all the logits of the
image. Red pixels speak for the class, blue against it (white: 0; the colours saturate at the
value given under the map, the 99.5th percentile of |map|). **own** is the model's own
explanation, Σ over channels of W(x) ⊙ x, which sums to the logit minus its fixed bias for the
dynamic-linear models; the other maps are post-hoc attributions (captum) of the same model.
The pictures were rendered when this book was built, from the explain stage's
`results/explain/<model>/explanations.pt`{computed}.

```{{raw}} html
<div id="explorer" class="explorer">
  <div class="explorer-controls">
    <label>Model <select id="ex-model"></select></label>
    <label>Image <select id="ex-image"></select></label>
    <label>Class <select id="ex-class"></select></label>
    <label>Explanation <select id="ex-attribution"></select></label>
  </div>
  <div class="explorer-panels">
    <figure><img id="ex-img" alt="input image"><figcaption id="ex-img-cap"></figcaption></figure>
    <figure><img id="ex-map" alt="explanation"><figcaption id="ex-map-cap"></figcaption></figure>
    <figure class="explorer-logits"><div id="ex-logits"></div><figcaption>logits of this image</figcaption></figure>
  </div>
  <p id="ex-note"></p>
</div>
<script src="_static/explorer/index.js"></script>
<script src="_static/explorer.js"></script>
```
"""

EXPLORER_JS = r"""// The explanation explorer: plain JavaScript over window.EXPLORER (no network).
(function () {
  var D = window.EXPLORER, $ = function (id) { return document.getElementById(id); };
  if (!D || !D.models.length) { $("ex-note").textContent = "No explanations were found when this book was built (run make repro first)."; return; }
  function fill(sel, items, keep) {
    var old = sel.value; sel.innerHTML = "";
    items.forEach(function (it) { var o = document.createElement("option"); o.value = it[0]; o.textContent = it[1]; sel.appendChild(o); });
    if (keep && items.some(function (it) { return String(it[0]) === old; })) sel.value = old;
  }
  function model() { return D.models[+$("ex-model").value]; }
  function image() { return model().images[+$("ex-image").value]; }
  function attributionsOf(img, cls) { return Object.keys((img.maps[cls] || {})); }
  function onModel() {
    var m = model();
    fill($("ex-image"), m.images.map(function (im, i) { return [i, "#" + im.index + " (" + m.classes[im.label] + ")"]; }), false);
    onImage();
  }
  function onImage() {
    var m = model(), im = image();
    var cls = m.classes.map(function (c, k) { return [k, c + (k === im.pred ? " (predicted)" : "") + (im.maps[k] ? "" : " – no map")]; });
    var prev = $("ex-class").value;
    fill($("ex-class"), cls, true);
    if (prev === "" || !im.maps[$("ex-class").value]) $("ex-class").value = String(im.pred);
    onClass();
  }
  function onClass() {
    var im = image(), ms = attributionsOf(im, $("ex-class").value);
    fill($("ex-attribution"), ms.map(function (k) { return [k, D.attributions[k] || k]; }), true);
    show();
  }
  function show() {
    var m = model(), im = image(), c = +$("ex-class").value, k = $("ex-attribution").value;
    $("ex-img").src = "_static/explorer/" + im.src;
    $("ex-img-cap").textContent = "true class: " + m.classes[im.label] + "; predicted: " + m.classes[im.pred];
    var e = (im.maps[c] || {})[k];
    if (e) {
      $("ex-map").src = "_static/explorer/" + e.src; $("ex-map").style.visibility = "visible";
      $("ex-map-cap").textContent = (D.attributions[k] || k) + " for " + m.classes[c] + " (logit " + im.logits[c].toFixed(2) + ")" + (e.scale ? "; colours saturate at ±" + e.scale.toPrecision(2) : "");
    } else {
      $("ex-map").removeAttribute("src"); $("ex-map").style.visibility = "hidden";
      $("ex-map-cap").textContent = "no explanation of " + m.classes[c] + " was rendered for this image (logit " + im.logits[c].toFixed(2) + ")";
    }
    var lo = Math.min.apply(null, im.logits.concat([0])), hi = Math.max.apply(null, im.logits.concat([0])), span = (hi - lo) || 1;
    $("ex-logits").innerHTML = im.logits.map(function (v, j) {
      var left = (Math.min(v, 0) - lo) / span * 100, w = Math.abs(v) / span * 100;
      return '<div class="ex-row' + (j === c ? ' ex-sel' : '') + '"><span class="ex-name">' + m.classes[j] + '</span><span class="ex-track"><span class="ex-bar" style="left:' + left + '%;width:' + w + '%"></span></span><span class="ex-val">' + v.toFixed(2) + '</span></div>';
    }).join("");
    $("ex-note").textContent = m.label + (m.explainable ? " explains itself (dynamic linear)." : " is not dynamic linear: its W(x) ⊙ x is Input×Gradient.") + (m.computed ? "" : " Only the explanations the explain stage stored are shown (its model file was not there when the book was built).");
  }
  fill($("ex-model"), D.models.map(function (m, i) { return [i, m.label + " (" + m.key + ")"]; }), false);
  $("ex-model").onchange = onModel; $("ex-image").onchange = onImage; $("ex-class").onchange = onClass; $("ex-attribution").onchange = show;
  onModel();
})();
"""

EXPLORER_CSS = """.explorer-controls label { margin-right: 1em; display: inline-block; }
.explorer-panels { display: flex; flex-wrap: wrap; gap: 1em; margin-top: 1em; align-items: flex-start; }
.explorer-panels img { width: 140px; height: 140px; image-rendering: pixelated; border: 1px solid #888; }
.explorer-panels figure { margin: 0; }\n.explorer-panels figcaption { max-width: 170px; font-size: 0.8em; }
.explorer-logits { min-width: 250px; }
.ex-row { display: flex; align-items: center; font-size: 0.8em; line-height: 1.5; }
.ex-row.ex-sel { font-weight: bold; }
.ex-name { width: 7em; }
.ex-track { position: relative; width: 90px; height: 0.8em; background: #eee; margin: 0 0.5em; }
.ex-bar { position: absolute; top: 0; bottom: 0; background: #4a7ab5; }
.ex-sel .ex-bar { background: #c0392b; }
"""


# ----------------------------------------------------------------------------- the Sphinx sources
CONF_PY = """# generated by bcos_lib.book: the Sphinx configuration of the book (nothing is executed)
project = "bcos-companion"
author = "bcos-companion"
root_doc = "README"
extensions = ["myst_nb"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = "bcos-companion"
html_static_path = ["_static"]
html_css_files = ["explorer.css"]
html_theme_options = {{"repository_url": "", "use_repository_button": False, "use_download_button": False,
                      "navigation_with_keys": False}}
# MathJax 2 from the jupyter-server-mathjax package, copied into _static/mathjax: no CDN
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# that package ships the STIX-Web fonts only (as Jupyter configures them); MyST-NB marks its pages
# tex2jax_ignore and the formulas "math", which MathJax 2 must then be told to process (MyST's own
# update of the configuration is for MathJax 3)
myst_update_mathjax = False
mathjax2_config = {{"HTML-CSS": {{"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                                "imageFont": None}},
                   "tex2jax": {{"processClass": "tex2jax_process|mathjax_process|math|output_area"}}}}
html_show_sourcelink = False
html_copy_source = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
nb_merge_streams = True
"""


def _doc_rank(path: Path) -> tuple[int, str]:
    return (DOCS_ORDER.index(path.stem) if path.stem in DOCS_ORDER else len(DOCS_ORDER), path.stem)


def _copy_linked_files(root: Path, src: Path, pages: Sequence[Path]) -> list[str]:
    """Copy the repository files that ``pages`` link to and the book does not hold yet into ``src``
    (at the same place); returns the markdown ones as documents for a table of contents."""
    extra: list[str] = []
    for page in pages:
        if not page.is_file():
            continue
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:|#", target):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            try:
                rel = path.relative_to(root.resolve())
            except ValueError:
                continue
            dest = src / rel
            # (README.md is the landing page, written by stage_sources itself)
            if (not path.is_file() or dest.exists() or rel.parts[0] in ("results", "build", "models")
                    or rel.as_posix() == "README.md"):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            if path.suffix == ".md":
                extra.append(rel.with_suffix("").as_posix())
    return extra


def _copy_mathjax(dest: Path) -> None:
    """MathJax 2 for the formulas, from the Python package jupyter-server-mathjax (the formulas
    then render offline); without its localisations other than English.  Its configuration
    loads the accessibility menu (``extensions/a11y``): without it MathJax renders nothing."""
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(static, dest, ignore=lambda d, names: [n for n in names if Path(d).name == "localization"
                                                           and n != "en"])


def _title(nb_path: Path) -> str:
    try:
        nb = json.loads(nb_path.read_text())
        for c in nb["cells"]:
            if c["cell_type"] == "markdown":
                m = re.search(r"^#\s+(.+)$", "".join(c["source"]), re.M)
                if m:
                    return m.group(1).strip()
    except (OSError, ValueError, KeyError):
        pass
    return nb_path.stem


def _toctree(caption: str, entries: Sequence[str], hidden: bool = True) -> str:
    if not entries:
        return ""
    opts = f":caption: {caption}\n" + (":hidden:\n" if hidden else "") + ":maxdepth: 1\n"
    return "\n```{toctree}\n" + opts + "\n" + "\n".join(entries) + "\n```\n"


def stage_sources(root: Path, src: Path, stage_notebooks: Path, tutorials: Path, explain_dir: Path,
                  models_dir: Path | None, n_images: int = 4, params: Any = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the book's sources to ``src``: README.md (the landing page), docs/, figures/, the
    executed notebooks and the explorer.  Returns what went in."""
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    (src / "conf.py").write_text(CONF_PY.format())
    for folder in ("docs", "figures"):
        if (root / folder).is_dir():
            shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("conf.py", "_build"))
    if (root / "notebooks" / "tutorials" / "figures").is_dir():
        shutil.copytree(root / "notebooks" / "tutorials" / "figures", src / "notebooks" / "tutorials" / "figures")
    # the tutorials: executed where available, else the source (shown without outputs)
    tut_dir = src / "notebooks" / "tutorials"
    tut_dir.mkdir(parents=True, exist_ok=True)
    tut_entries, unexecuted = [], []
    for nb in sorted((root / "notebooks" / "tutorials").glob("[0-9]*.ipynb")):
        executed = Path(tutorials) / nb.name
        shutil.copy2(executed if executed.is_file() else nb, tut_dir / nb.name)
        if not executed.is_file():
            unexecuted.append(nb.name)
        tut_entries.append(f"notebooks/tutorials/{nb.stem}")
    # the stage notebooks of the last dvc repro, by stage
    stage_dir = src / "notebooks" / "stages"
    stage_dir.mkdir(parents=True)
    by_stage: dict[str, list[str]] = {}
    for nb in sorted(Path(stage_notebooks).glob("*.ipynb")) if Path(stage_notebooks).is_dir() else []:
        if nb.name.endswith(".failed.ipynb") or nb.name.startswith("."):
            continue
        shutil.copy2(nb, stage_dir / nb.name)
        by_stage.setdefault(nb.name[:2], []).append(nb.stem)
    lines = ["# The pipeline's notebooks\n",
             "The notebooks of the stages of the last `dvc repro`, with the outputs they had then "
             "(`results/notebooks/`; see [the pipeline](../../docs/pipeline.md)).\n"]
    if not by_stage:
        lines.append("No executed stage notebooks were found when this book was built: run `make repro` first.\n")
    for prefix, stems in sorted(by_stage.items()):
        lines.append(f"\n## {prefix} · {STAGE_TITLES.get(prefix, 'Stage')}\n")
        lines += [f"* [{_title(stage_dir / (s + '.ipynb'))}]({s}.ipynb)" for s in stems]
        lines.append(_toctree(STAGE_TITLES.get(prefix, prefix), stems))
    (stage_dir / "index.md").write_text("\n".join(lines) + "\n")
    # the explorer
    index = build_explorer(explain_dir, models_dir, src / "_static" / EXPLORER_DIR, n_images, params, log)
    computed = [m["key"] for m in index["models"] if m["computed"]]
    note = (f"; the maps of every class and attribution were computed from `models/<model>.pt` for the "
            f"first {n_images} images of " + ", ".join(f"`{k}`" for k in computed)) if computed else ""
    (src / "explorer.md").write_text(EXPLORER_PAGE.format(computed=note))
    (src / "_static" / "explorer.js").write_text(EXPLORER_JS)
    _copy_mathjax(src / "_static" / "mathjax")
    (src / "_static" / "explorer.css").write_text(EXPLORER_CSS)
    # the landing page: the README with the book's table of contents
    docs = [f"docs/{p.stem}" for p in sorted((src / "docs").glob("*.md"), key=_doc_rank)] if (src / "docs").is_dir() else []
    # files of the repository that the README and docs/ link to (e.g. bcos_lib/methods/README.md)
    docs += _copy_linked_files(root, src, [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    readme = (root / "README.md").read_text()
    readme += "\n" + _toctree("Documentation", docs) + _toctree("Tutorials", tut_entries)
    readme += _toctree("Results", ["explorer", "notebooks/stages/index"])
    (src / "README.md").write_text(readme)
    return {"tutorials": len(tut_entries), "unexecuted_tutorials": unexecuted,
            "stage_notebooks": sum(len(v) for v in by_stage.values()), "explorer_models": len(index["models"]),
            "explorer_computed": computed, "docs": len(docs)}


def build_book(root: Path, out: Path, stage_notebooks: Path | None = None, tutorials: Path | None = None,
               explain_dir: Path | None = None, models_dir: Path | None = None, n_images: int = 4,
               params: Any = None, log: Callable[[str], None] = print, quiet: bool = True) -> Path:
    """Stage the sources under ``out/src`` and build the HTML into ``out/html``; returns the
    landing page (``out/html/README.html``, with ``out/html/index.html`` pointing at it)."""
    from sphinx.cmd.build import build_main

    t0 = time.perf_counter()
    root, out = Path(root), Path(out)
    info = stage_sources(root, out / "src", Path(stage_notebooks or root / "results" / "notebooks"),
                         Path(tutorials or root / "results" / "tutorials"),
                         Path(explain_dir or root / "results" / "explain"),
                         Path(models_dir) if models_dir is not None else root / "models", n_images, params, log)
    if info["unexecuted_tutorials"]:
        log(f"not executed (shown without outputs; `make tutorials` executes them): "
            f"{', '.join(info['unexecuted_tutorials'])}")
    html_dir = out / "html"
    args = ["-b", "html", "-j", "1", "-E", str(out / "src"), str(html_dir), "-w", str(out / "warnings.txt")]
    rc = build_main(args + (["-q"] if quiet else []))
    if rc:
        raise RuntimeError(f"sphinx-build failed (exit {rc}); see {out / 'warnings.txt'}")
    (html_dir / "index.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=README.html">'
        '<title>bcos-companion</title></head><body><a href="README.html">bcos-companion</a></body></html>\n')
    log(f"book: {info['docs']} docs pages, {info['tutorials']} tutorials, {info['stage_notebooks']} stage notebooks, "
        f"explorer of {info['explorer_models']} models → {html_dir / 'index.html'} "
        f"({time.perf_counter() - t0:.0f} s)")
    return html_dir / "README.html"


def main(argv: Sequence[str] | None = None) -> int:
    from .core.paths import project_root

    p = argparse.ArgumentParser(prog="python -m bcos_lib.book", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/book", help="output folder (sources in src/, the site in html/)")
    p.add_argument("--results", default=None,
                   help="the folder that holds the pipeline's results/ and models/ (default: the project root; "
                        "the executed tutorials are always those of make tutorials, results/tutorials/)")
    p.add_argument("--n-images", type=int, default=4, help="images per model with every class and attribution rendered")
    p.add_argument("--profile", default="default", help="params.yaml profile for the attribution settings")
    a = p.parse_args(argv)
    root = project_root()
    base = Path(a.results).resolve() if a.results else root
    try:
        from .core.config import load_params
        params = load_params(root / "params.yaml", a.profile)
    except Exception as e:  # noqa: BLE001 - the attributions then run on their defaults
        print(f"params.yaml not used ({e}); the attributions run with their defaults")
        params = None
    build_book(root, (root / a.out) if not Path(a.out).is_absolute() else Path(a.out),
               base / "results" / "notebooks", root / "results" / "tutorials", base / "results" / "explain",
               base / "models", a.n_images, params, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
