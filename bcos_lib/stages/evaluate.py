"""Stage evaluate: every metric of ``evaluate.metrics`` for one trained model.

The metrics are those registered through the method contract (:func:`bcos_lib.methods.register_metric`):
the shared grid pointing game and pixel deletion (:mod:`bcos_lib.metrics`) and each method's
own.  Outputs: ``results/evaluate/<key>/metrics.json`` (``{metric: summary}``) and one CSV per
table under ``results/evaluate/<key>/tables/``, among them ``predictions.csv``: the predicted class
of every test image, from which the claims ledger compares two models' accuracies image by image.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..core.contract import EvalContext
from ..core.registry import get_metric
from ..core.config import metric_options
from ..core.pipeline import Run, kept_test_logits, load_data, load_trained, write_csv, write_timing
from ..core.utils import versions, write_json


def run(run: Run, key: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the metrics configured for ``models.<key>``; write their summaries and tables."""
    cfg = run.params.evaluate_config(key)
    where = f"models.{key}.evaluate" if run.params.model(key).evaluate else "evaluate"
    metrics = [(get_metric(name), metric_options(name, cfg, where)) for name in cfg.metrics]  # errors before work
    model = load_trained(run, key)
    test_ds = load_data(run, "test")
    t0 = time.time()
    summary: dict[str, Any] = {"model": key, "seed": run.params.base.seed, "profile": run.params.base.profile,
                               "versions": versions()}
    tables, seconds = {}, {}
    from ..metrics import remember_logits, shared_logits, test_predictions
    with shared_logits():   # one pass over the test set for every metric's pool and the per-image predictions
        kept = kept_test_logits(model, test_ds)
        if kept is not None:   # the train stage's last pass, kept with the model: none here
            remember_logits(model, test_ds.images, run.device, kept)
            log("evaluate: the test set's logits from the model file (the train stage's last pass)")
        for metric, options in metrics:
            start = time.time()
            ctx = EvalContext(key=key, model=model, entry=run.params.model(key), test_data=test_ds, cfg=cfg,
                              options=options, device=run.device, seed=run.params.base.seed, log=log,
                              load_train_data=lambda: load_data(run, "train"))
            result = metric.fn(ctx)
            seconds[metric.name] = time.time() - start
            if result is None:
                log(f"evaluate: metric {metric.name!r} does not apply to {key}")
                continue
            summary[metric.name] = result.summary
            for name, df in result.tables.items():
                if name in tables:
                    raise RuntimeError(f"metric {metric.name!r} writes a table {name!r} that another metric wrote too")
                tables[name] = df.assign(model=key)[["model", *df.columns]]
        preds = test_predictions(model, test_ds, device=run.device)   # the outcomes behind the accuracy, per image
    tables["predictions"] = preds.assign(model=key)[["model", *preds.columns]]
    out = run.path("results", "evaluate", key)
    write_tables(tables, out / "tables")
    write_json(summary, out / "metrics.json")
    write_timing(run, "evaluate", key, time.time() - t0, **seconds)
    return summary


def read_result(run: Run, key: str) -> dict[str, Any]:
    """What :func:`run` returned for ``models.<key>``, read back from its metrics.json (a model
    evaluated in its own process, :mod:`bcos_lib.core.members`)."""
    import json
    return json.loads(run.path("results", "evaluate", key, "metrics.json").read_text())


def write_tables(tables: dict[str, Any], folder: Path) -> Path:
    """Write ``{name: DataFrame}`` as ``folder/<name>.csv`` so that ``folder`` holds exactly these
    tables (an empty folder when there are none: DVC tracks the folder either way).  They are
    written to a sibling folder first and swapped in, so a table an earlier configuration wrote
    is not left behind for the figures to plot, and a failure leaves the old folder whole."""
    fresh = folder.with_name(f".{folder.name}.new")
    if fresh.exists():
        shutil.rmtree(fresh)
    fresh.mkdir(parents=True)
    for name, df in tables.items():
        write_csv(df, fresh / f"{name}.csv")
    if folder.exists():
        shutil.rmtree(folder)
    fresh.rename(folder)
    return folder


def localisation_table(summaries: dict[str, dict[str, Any]]):
    """Mean localisation per attribution (rows) and model (columns)."""
    import pandas as pd
    return pd.DataFrame({k: {m: v["mean"] for m, v in (s.get("localisation") or {}).get("attributions", {}).items()}
                         for k, s in summaries.items()})


def read_tables(run: Run, keys: list[str], name: str):
    """Table ``name`` (e.g. ``"localisation"``) of the models ``keys``, one frame (empty if none wrote it)."""
    import pandas as pd
    frames = [pd.read_csv(f) for k in keys if (f := run.path("results", "evaluate", k, "tables", f"{name}.csv")).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
