"""Stage figures: every figure under figures/, the results tables in results/report.md and
the headline numbers that DVC shows as metrics (results/metrics/<key>.json).

The shared figures (training curves, explanations, localisation, deletion) cover the models of
no ``group``; each registered method then adds its own figures and its report section
(:class:`bcos_lib.methods.Method`), so this stage names no method.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.contract import ModelResult
from ..core.registry import list_methods
from ..core.pipeline import Run, save_figure
from ..results import collect_results
from ..core.utils import atomic_write


def shared_figures(res: dict[str, ModelResult]) -> dict[str, Any]:
    """The figures of the models of no group: training curves, explanations, localisation, deletion."""
    from .. import figures as F
    main = [r for r in res.values() if not r.entry.group]
    figs: dict[str, Any] = {}
    hist = {r.label: r.history for r in main if r.history is not None}
    if hist:
        figs["training_curves"] = F.plot_training_curves(hist)
    expl = {r.key: r.explanations for r in main if r.explanations is not None}
    if expl:
        figs["explanations"] = F.plot_model_comparison(expl)
    for key, s in expl.items():
        figs[f"explanations_{key}"] = F.plot_explanations(s)
        if s.get("explainable"):
            figs[f"multiclass_{key}"] = F.plot_multiclass(s)
            if s.get("layers"):
                figs[f"layers_{key}"] = F.plot_layers(s)
    loc = [r.tables["localisation"] for r in main if len(r.tables.get("localisation", ()))]
    if loc:
        figs["localisation"] = F.plot_localisation(pd.concat(loc, ignore_index=True))
    dele = [r.tables["deletion"] for r in res.values() if len(r.tables.get("deletion", ()))]
    if dele:
        figs["deletion"] = F.plot_deletion(pd.concat(dele, ignore_index=True))
    return figs


def run(run: Run, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write every figure under figures/, the results tables to results/report.md and the
    headline metrics to results/metrics/ (:mod:`bcos_lib.headline`)."""
    import matplotlib.pyplot as plt

    from ..headline import write_headlines
    from ..report import make_report

    res = collect_results(run)
    written: dict[str, Path] = {}
    sections = []
    figure_sets = [shared_figures(res)]
    for method in list_methods():
        method.load("present")
        if method.figures is not None:
            figure_sets.append(method.figures(res, run))
        if method.report is not None:
            text = method.report(res)
            if text:
                sections.append(text)
    for figs in figure_sets:
        for name, fig in figs.items():
            if name in written:
                raise RuntimeError(f"two figures are called {name!r}: rename one (figures/{name}.png)")
            written[name] = save_figure(run, fig, name)
            plt.close(fig)
    from ..core.data import DATASET_NAMES
    report = make_report(res, sections, figures=sorted(written),
                         dataset=DATASET_NAMES.get(run.params.data.dataset, run.params.data.dataset))
    n_figures = len(written)
    written["report"] = atomic_write(run.path("results", "report.md"), lambda tmp: Path(tmp).write_text(report))
    written.update(write_headlines(res, run.path("results")))
    log(f"wrote {n_figures} figures to figures/, results/report.md and results/metrics/")  # no absolute path: same bytes in every clone
    return written


def report_as_shown(run: Run, report: Path) -> str:
    """results/report.md as the executed notebook (results/notebooks/) shows it: the report's
    figure links are relative to the project root (where README.md shows them), so they are made
    relative to the notebook's folder (``../../figures/``, which holds in the book as well)."""
    up = Path(os.path.relpath(run.path("figures"), run.path("results", "notebooks"))).as_posix()
    return re.sub(r"\]\(figures/", f"]({up}/", report.read_text())
