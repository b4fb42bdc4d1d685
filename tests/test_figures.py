"""The figures say what they show to a reader who has only the paper (issue 20, defect 8).

Synthetic inputs in the shapes the stages save; each test checks one thing that misled:
twin y-axes in the B sweep, no key for the contribution colours, fractional epochs and mixed
losses in the training curves, module paths as layer names, and "random order" in both halves
of the deletion legend.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bcos_lib import create_model
from bcos_lib import figures as F


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def saved_explanations(n: int = 3, rgba: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"key": "bcos_cnn", "label": "B-cos CNN", "images": torch.rand(n, 1, 8, 8, generator=g),
            "labels": torch.arange(n), "targets": torch.arange(n), "classes": [f"class {i}" for i in range(10)],
            "contribution_map": torch.randn(n, 8, 8, generator=g),
            "rgba": torch.rand(n, 8, 8, 4, generator=g) if rgba else None, "explainable": rgba,
            "multi": {"targets": torch.tensor([[0, 1], [1, 2]]), "contribution_map": torch.randn(2, 2, 8, 8, generator=g),
                      "rgba": torch.rand(2, 2, 8, 8, 4, generator=g) if rgba else None},
            "layers": {f"features.{i}": {"channel": 7 * i, "title": None, "contribution_map": torch.randn(8, 8, generator=g),
                                         "rgba": torch.rand(8, 8, 4, generator=g) if rgba else None} for i in (8, 9, 10)}}


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def colourbar_labels(fig) -> list[list[str]]:
    return [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_b_sweep_puts_ours_and_the_paper_on_one_scale():
    sweep = pd.DataFrame({"b": [1.0, 1.5, 2.0, 2.5], "test_accuracy": [72.0, 75.7, 76.8, 70.5],
                          "localisation": [0.2, 0.53, 0.58, 0.6]})
    paper = pd.DataFrame({"b": [1.0, 1.5, 2.0, 2.5], "accuracy": [93.53, 93.69, 93.19, 92.37]})
    from bcos_lib.methods.bcos.present import plot_b_sweep
    fig = plot_b_sweep(sweep, paper)
    assert len(fig.axes) == 2  # accuracy and localisation; no twin axis
    acc = fig.axes[0]
    assert len(acc.lines) == 2
    lo, hi = acc.get_ylim()
    assert lo <= 70.5 and hi >= 93.69  # both curves inside one honest range
    labels = [line.get_label() for line in acc.lines]
    assert any("CIFAR-10" in s for s in labels) and any("Fashion-MNIST" in s for s in labels)


@pytest.mark.parametrize("plot", ["explanations", "multiclass", "layers", "comparison"])
def test_contribution_maps_have_a_colour_key(plot):
    s = saved_explanations()
    fig = {"explanations": lambda: F.plot_explanations(s), "multiclass": lambda: F.plot_multiclass(s),
           "layers": lambda: F.plot_layers(s),
           "comparison": lambda: F.plot_model_comparison({"a": s, "b": saved_explanations(rgba=False)})}[plot]()
    assert colourbar_labels(fig) == [["against", "0", "for"]]
    if plot != "multiclass":
        assert any("colour explanation" in t for t in texts(fig)), texts(fig)


def test_explanation_rows_are_named():
    fig = F.plot_explanations(saved_explanations())
    shown = " ".join(texts(fig))
    assert "image" in shown and "W(x)⊙x" in shown and "colour explanation" in shown


def test_training_curves_have_whole_epochs_and_never_mix_losses():
    h = {"std_cnn": pd.DataFrame({"epoch": [1, 2, 3], "test_accuracy": [80, 85, 87], "train_accuracy": [75, 84, 88],
                                  "train_loss": [0.6, 0.4, 0.3]}),
         "bcos_cnn": pd.DataFrame({"epoch": [1, 2, 3], "test_accuracy": [78, 84, 86], "train_accuracy": [70, 82, 86],
                                   "train_loss": [0.2, 0.12, 0.1]})}
    fig = F.plot_training_curves(h)
    assert all("loss" not in ax.get_ylabel() for ax in fig.axes)  # unknown loss kinds: no shared loss axis
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    fig = F.plot_training_curves(h, losses={"std_cnn": "ce", "bcos_cnn": "bce"})
    loss_axes = [ax for ax in fig.axes if "loss" in ax.get_ylabel()]
    assert len(loss_axes) == 2
    assert sorted(len(ax.lines) for ax in loss_axes) == [1, 1]
    assert {ax.get_ylabel() for ax in loss_axes} == {"training loss (cross-entropy)",
                                                      "training loss (binary cross-entropy)"}


def test_hidden_layers_are_named_as_in_the_paper_not_by_module_path():
    model = create_model("bcos_cnn", channels=[8, 8, 16, 16], strides=[1, 2, 1, 2])
    s = saved_explanations()
    names = model.explanation_layers()
    assert list(names) == ["features.4", "features.5", "features.6", "features.7"]
    s["layers"] = {"features.4": {**s["layers"]["features.8"], "title": names["features.4"]},
                   "features.5": {**s["layers"]["features.9"], "title": names["features.5"]},
                   "features.6": {**s["layers"]["features.10"], "title": None}}
    fig = F.plot_layers(s)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert not any("features." in t for t in titles), titles
    assert "conv layer 3 of 4\nunit 56" in titles and "conv layer 3 of 4,\nafter its norm\nunit 63" in titles, titles
    assert "hidden layer 7\nunit 70" in titles  # an older file without titles


def test_deletion_legend_names_random_order_once_and_apart_from_the_attributions():
    rows = []
    for model in ("std_cnn", "bcos_cnn"):
        for attribution, orders in (("ixg", ("most", "least")), ("own", ("most", "least")), ("random", ("random",))):
            if model == "std_cnn" and attribution == "own":
                continue
            for order in orders:
                for f in np.linspace(0, 1, 5):
                    rows.append({"model": model, "attribution": attribution, "order": order, "fraction": f,
                                 "score": 1 - f if order != "least" else 1 - f / 2, "score_std": 0.0})
    fig = F.plot_deletion(pd.DataFrame(rows))
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert sum("random" in t.lower() for t in legend) == 1, legend
    assert "random order (baseline)" in legend
    assert {"most important first", "least important first"} <= set(legend)
    # the random curve is a broad light-grey band in every panel (not one more dashed line), the attributions coloured
    for ax in fig.axes[:2]:
        grey = [line for line in ax.lines
                if tuple(np.round(matplotlib.colors.to_rgb(line.get_color()), 2)) == (0.75, 0.75, 0.75)]
        assert grey and all(line.get_linewidth() >= 4 and line.get_linestyle() == "-" for line in grey)


def test_localisation_and_deletion_figures_stay_legible_with_many_models():
    """Five models and seven attributions: panels in rows of three (not a strip 2 000 pixels wide), labels
    at a readable size."""
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(5)]
    scores = pd.DataFrame([{"model": m, "attribution": attr, "score": rng.random(), "cell": c}
                           for m in models for attr in ("own", "ixg", "ig", "gradcam", "occlusion", "deeplift", "random")
                           for c in range(9)])
    fig = F.plot_localisation(scores)
    width, height = fig.get_size_inches()
    assert width <= 13 and len(fig.axes) == 5
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.get_yticklabels()) >= 8
    curves = pd.DataFrame([{"model": m, "attribution": "ixg", "order": o, "fraction": f, "score": 1 - f, "score_std": 0}
                           for m in models for o in ("most", "least") for f in (0, 0.5, 1)])
    fig = F.plot_deletion(curves)
    assert fig.get_size_inches()[0] <= 14 and len(fig.axes) == 5


def test_figure_functions_return_figures_pyplot_no_longer_holds(tmp_path):
    """A notebook shows each figure once: the library's figures are closed in pyplot (else the
    inline backend draws them a second time at the end of the cell, and 24 figures in one loop
    trip pyplot's "more than 20 figures" warning), and they still draw and save."""
    import ast
    from pathlib import Path

    plt.close("all")
    h = {"std_cnn": pd.DataFrame({"epoch": [1, 2], "test_accuracy": [80, 85], "train_accuracy": [75, 84],
                                  "train_loss": [0.6, 0.4]})}
    figs = [F.plot_training_curves(h),
            F.plot_samples(torch.rand(6, 1, 28, 28), torch.arange(6), [f"c{i}" for i in range(10)], n=6)]
    assert plt.get_fignums() == []
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000
    # and every function of the library that builds a figure hands it back through `finished`
    root = Path(F.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            makes = any(isinstance(n, ast.Attribute) and n.attr in ("subplots", "figure")
                        and isinstance(n.value, ast.Name) and n.value.id == "plt" for n in ast.walk(fn))
            returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Name)
                       and n.value.id == "fig"]
            assert not (makes and returns), f"{path.name}:{fn.name} returns an open figure: return finished(fig)"


def _callee(call) -> str:
    """The name a call calls: ``f`` of ``f(...)`` and of ``mod.f(...)``."""
    import ast
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _shown_names(tree) -> set:
    import ast
    shown = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "display":
            shown |= {a.id for a in n.args if isinstance(a, ast.Name)}
    return shown


def test_every_notebook_shows_the_figures_it_draws():
    """The library's figures come back closed (above), so a notebook shows one only as the cell's
    value or through display(): a figure assigned and never displayed, or a drawing call that is
    not the cell's last statement, would silently show nothing."""
    import ast
    import json
    from pathlib import Path

    root = Path(F.__file__).resolve().parents[1]
    checked = 0
    for path in sorted((root / "notebooks").rglob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            tree = ast.parse("\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))))
            shown = _shown_names(tree)
            last = tree.body[-1] if tree.body else None
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    if _callee(node.value).startswith("plot_"):
                        checked += 1
                        targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
                        ends_with = isinstance(last, ast.Expr) and isinstance(last.value, ast.Name) and \
                            last.value.id in targets
                        assert targets & shown or ends_with, f"{path.name}: {ast.unparse(node)[:80]} is never shown"
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                    if _callee(node.value).startswith("plot_"):
                        checked += 1
                        assert node is last and not src.rstrip().endswith(";"), \
                            f"{path.name}: {ast.unparse(node)[:80]} is not the cell's value: display() it"
    assert checked >= 10, checked
