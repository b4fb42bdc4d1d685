"""Reading back what the stages wrote: one :class:`ModelResult` per model key.

Used by the figures stage (figures, report, headline metrics) and the claims stage (the claims
ledger); it imports no figure or metric code, so that a figure edit does not rerun the ledger."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .core.contract import ModelResult
from .core.registry import method_of
from .core.utils import safe_torch_load

__all__ = ["collect_results"]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect_results(run: Any, explanations: bool = True, replicas: bool = False) -> dict[str, ModelResult]:
    """Everything the stages wrote, per model key, in params.yaml order (missing parts are None).
    ``replicas``: include the seed replicas of models with ``seeds`` (only the claims ledger reads
    them); ``explanations``: load the explain stage's pictures."""
    res = {}
    for key, entry in run.params.models.items():
        if entry.replica_of and not replicas:
            continue
        h = run.path("results", "train", key, "history.csv")
        tables_dir = run.path("results", "evaluate", key, "tables")
        tables = {f.stem: pd.read_csv(f) for f in sorted(tables_dir.glob("*.csv"))} if tables_dir.is_dir() else {}
        e = run.path("results", "explain", key, "explanations.pt")
        res[key] = ModelResult(
            key=key, entry=entry, method=method_of(entry.arch).name, label=entry.label or key,
            train=_read_json(run.path("results", "train", key, "metrics.json")),
            explain=_read_json(run.path("results", "explain", key, "metrics.json")),
            evaluate=_read_json(run.path("results", "evaluate", key, "metrics.json")),
            history=pd.read_csv(h) if h.is_file() else None, tables=tables,
            explanations=safe_torch_load(e) if explanations and e.is_file() else None)
    return res
