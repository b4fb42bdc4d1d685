"""What DVC shows as metrics (issue 20, defect 7): a few headline numbers per model, readable in
a 120-column terminal, for ``dvc metrics show`` and for the ``dvc exp show`` command docs/pipeline.md
documents."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bcos_lib.headline import HEADLINE_KEYS, headline, write_headlines
from bcos_lib.core.contract import ModelResult

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
WIDTH = 120


def result(key: str, group: str | None = None, train: dict | None = None, evaluate: dict | None = None) -> ModelResult:
    return ModelResult(key=key, entry=SimpleNamespace(group=group), method="m", label=key, train=train,
                       explain=None, evaluate=evaluate, history=None, tables={}, explanations=None)


def loc(**means: tuple[float, float, float]) -> dict:
    """A localisation summary: attribution -> (mean, ci_low, ci_high)."""
    return {"attributions": {m: {"mean": v[0], "ci_low": v[1], "ci_high": v[2], "std": 0.1, "n": 9}
                             for m, v in means.items()}}


def test_headline_reads_the_stage_summaries_and_leaves_out_what_was_not_scored():
    r = result("b", train={"test_accuracy": 90.123456},
               evaluate={"localisation": loc(own=(0.7, 0.68, 0.72), gradcam=(0.5, 0.45, 0.55), ixg=(0.6, 0.58, 0.62)),
                         "deletion": {"attributions": {"own": {"auc_most": 0.21, "auc_least": 0.7},
                                                       "random": {"auc_most": 0.4, "auc_least": 0.4}}}})
    assert headline(r) == {"accuracy": 90.1235, "loc_own": 0.7, "loc_posthoc": 0.6, "del_own": 0.21}
    assert list(headline(r)) == list(HEADLINE_KEYS)
    # a post-hoc-only model: no own numbers; a model that was only trained: accuracy alone
    posthoc = result("s", train={"test_accuracy": 91.0}, evaluate={"localisation": loc(gradcam=(0.64, 0.6, 0.68))})
    assert headline(posthoc) == {"accuracy": 91.0, "loc_posthoc": 0.64}
    assert headline(result("t", train={"test_accuracy": 80.0}, evaluate={"mis": {"mean": 0.1}})) == {"accuracy": 80.0}
    assert headline(result("u")) == {}


def test_write_headlines_writes_every_model_and_removes_models_no_longer_there(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "gone.json").write_text("{}")
    res = {"a": result("a", train={"test_accuracy": 88.0}), "b": result("b")}
    written = write_headlines(res, tmp_path)
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["a.json", "b.json"]
    assert json.loads((tmp_path / "metrics" / "a.json").read_text()) == {"accuracy": 88.0}
    assert set(written) == {"metrics/a", "metrics/b"}
    assert not (tmp_path / "summary.json").exists()   # the claims stage writes it


def test_dvc_yaml_declares_the_headline_files_as_the_only_metrics():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    declared = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for entry in body.get("metrics", []):
            declared.setdefault(name, []).extend(entry)
    assert declared == {"figures": [f"results/metrics/{k}.json" for k in models],
                        "claims": ["results/claims.json", "results/summary.json"]}
    # the stages' own metrics.json files are still outputs (git-tracked, not in DVC's cache)
    for key in models:   # (a seed replica's outputs are those of the stage of the model it replicates)
        outs = [next(iter(o)) for o in stages[f"evaluate-{key}"]["outs"]]
        assert f"results/evaluate/{key}/metrics.json" in outs


def lines_of(cmd: list[str]) -> list[str]:
    env = {**os.environ, "COLUMNS": str(WIDTH), "LINES": "200"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [line for line in p.stdout.splitlines() if line.strip()]


needs_dvc = pytest.mark.skipif(not DVC.is_file(), reason=f"dvc is not installed next to {sys.executable}")
needs_results = pytest.mark.skipif(not (REPO / "results" / "metrics").is_dir(),
                                   reason="no results/metrics/ (the figures stage writes it)")


@needs_dvc
@needs_results
def test_dvc_metrics_show_is_a_row_per_model_that_fits_120_columns():
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    files = [f"results/metrics/{k}.json" for k in models] + ["results/summary.json"]
    lines = lines_of([str(DVC), "metrics", "show", *files])
    header, rows = lines[0].split(), lines[1:]
    assert header == ["Path", "accuracy", "del_own", "loc_own", "loc_posthoc", "margin", "margin_low"], header
    assert sorted(r.split()[0] for r in rows) == sorted(files)
    assert max(map(len, lines)) <= WIDTH, max(map(len, lines))


@needs_dvc
@pytest.mark.skipif(not (REPO / "results" / "claims.json").is_file(), reason="no results/claims.json (the claims stage)")
def test_dvc_metrics_show_of_the_claims_ledger_is_its_verdict_counts_within_120_columns():
    lines = lines_of([str(DVC), "metrics", "show", "results/claims.json"])
    header, row = lines[0].split(), lines[1].split()
    assert header == ["Path", "inconclusive", "not_reproduced", "not_run", "reproduced", "under_trained"], header
    data = json.loads((REPO / "results" / "claims.json").read_text())
    assert [int(v) for v in row[1:]] == [data[k] for k in header[1:]]
    assert sum(data[k] for k in header[1:]) == len(data["claims"])
    assert max(map(len, lines)) <= WIDTH, max(map(len, lines))


@needs_dvc
@needs_results
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_the_readmes_exp_show_command_fits_120_columns_without_collapsed_columns():
    block = re.search(r"^(dvc exp show --drop .*)$", (REPO / "docs" / "pipeline.md").read_text(), re.M)
    assert block, "docs/pipeline.md documents a `dvc exp show --drop … --keep …` command"
    argv = [str(DVC)] + [a.strip("'") for a in re.findall(r"'[^']*'|\S+", block.group(1))][1:] + ["--no-pager"]
    lines = lines_of(argv)
    text = "\n".join(lines)
    assert "…" not in text, text
    for column in ("Experiment", "margin", "margin_low", "base.profile", "results/metrics/bcos_cnn.json:accuracy"):
        assert column in lines[1], lines[1]
    # room for an experiment's name in the first column ("├── 1a2b3c4 [bushy-bout]", 25 characters)
    assert max(map(len, lines)) + len("├── 1a2b3c4 [bushy-bout]") - len("workspace") <= WIDTH, text
