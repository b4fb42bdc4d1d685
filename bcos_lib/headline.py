"""The few numbers per model that ``dvc metrics show`` and ``dvc metrics diff`` compare.

The stages write everything they measure to ``results/<stage>/<key>/metrics.json`` (and long
tables to CSV); those files are plain outputs, read by the report.  What DVC shows as
*metrics* is one small file per model, ``results/metrics/<key>.json``, with the same few keys
for every model, so that ``dvc metrics show`` is a table of one row per model and a handful
of columns (it fits a 120-column terminal) and ``dvc metrics diff`` between two experiments
says at a glance whether the central claim moved:

``accuracy``
    test accuracy (%) of the trained model;
``loc_own``
    grid-pointing localisation of the model's own explanation (B-cos v2 §5.1: the share of
    positive attribution that falls in the cell of the class explained), when it has one;
``loc_posthoc``
    the best post-hoc attribution's localisation on the same model (the baseline the own
    explanation is compared with);
``del_own``
    pixel deletion, area under the target-probability curve with the own explanation's most
    important pixels removed first (lower is better).

A model that was not scored on a number has no key for it (DVC shows "-").

The pipeline's central comparison, ``results/summary.json`` (``margin``, ``margin_low``), is the
claims ledger's (:func:`bcos_lib.stages.claims.summary`): the two sides scored on the same grids.

Everything else (each method's metrics, confidence intervals, the faithfulness metrics) stays
in the stages' metrics.json files and in the README's results tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .core.contract import ModelResult
from .core.utils import atomic_write

__all__ = ["HEADLINE_KEYS", "headline", "write_headlines"]

HEADLINE_KEYS = ("accuracy", "loc_own", "loc_posthoc", "del_own")
_DIGITS = 4


def headline(r: ModelResult) -> dict[str, float]:
    """The headline numbers of one model (a subset of :data:`HEADLINE_KEYS`, rounded)."""
    out: dict[str, float] = {}
    if r.train and r.train.get("test_accuracy") is not None:
        out["accuracy"] = float(r.train["test_accuracy"])
    loc = (r.metric("localisation") or {}).get("attributions", {})
    if "own" in loc:
        out["loc_own"] = float(loc["own"]["mean"])
    posthoc = [s["mean"] for m, s in loc.items() if m != "own"]
    if posthoc:
        out["loc_posthoc"] = float(max(posthoc))
    dele = (r.metric("deletion") or {}).get("attributions", {})
    if "own" in dele:
        out["del_own"] = float(dele["own"]["auc_most"])
    return {k: round(v, _DIGITS) for k, v in out.items()}


def _write_json(path: Path, data: Mapping[str, float]) -> Path:
    text = json.dumps(dict(data), indent=2) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_headlines(results: Mapping[str, ModelResult], results_dir: Path) -> dict[str, Path]:
    """``<results_dir>/metrics/<key>.json`` for every model, each written atomically; files of
    models no longer in params.yaml are removed (DVC would otherwise keep showing them)."""
    out_dir = results_dir / "metrics"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {f"metrics/{key}": _write_json(out_dir / f"{key}.json", headline(r)) for key, r in results.items()}
    for stale in out_dir.glob("*.json"):
        if stale.stem not in results:
            stale.unlink()
    return written
