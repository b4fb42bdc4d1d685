"""Stage evaluate: grid pointing game and pixel deletion for one trained model."""
from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd

from ..pipeline import Run, load_data, load_trained, write_csv, write_timing
from ..utils import versions, write_json


def run(run: Run, key: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Grid pointing game (own explanation and post-hoc baselines) and pixel deletion for ``models.<key>``."""
    from ..metrics import evaluate_model

    cfg = run.params.evaluate_config(key)
    model = load_trained(run, key)
    test_ds = load_data(run, "test")
    t0 = time.time()
    scores, deletion, summary = evaluate_model(model, test_ds, cfg, run.device, log=log,
                                             seed=run.params.base.seed)
    scores.insert(0, "model", key)
    deletion.insert(0, "model", key)
    summary = {"model": key, "seed": run.params.base.seed, "profile": run.params.base.profile,
               "versions": versions(), **summary}
    out = run.path("results", "evaluate", key)
    write_csv(scores, out / "localisation.csv")
    write_csv(deletion, out / "deletion.csv")
    write_json(summary, out / "metrics.json")
    write_timing(run, "evaluate", key, time.time() - t0)
    return summary




def localisation_table(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Mean localisation per method (rows) and model (columns)."""
    return pd.DataFrame({k: {m: v["mean"] for m, v in s.get("localisation", {}).items()}
                         for k, s in summaries.items()})
