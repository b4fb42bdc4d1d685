"""An edit reruns only what it changes.

In a scratch copy of the project, every stage's outputs are stood in by small files and recorded
with ``dvc commit``, so that ``dvc status`` says the pipeline is up to date; then one file at a
time gets a comment (or params.yaml one changed value), and ``dvc status`` must call exactly the
stages that run that file stale — no training for a figure, the report or one paper's
presentation; only that paper's stages for its layer.  The expectations are written from what
each file is for, not read from dvc.yaml, so a generator that lists too much or too little fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bcos_lib.core.config import load_params
from bcos_lib.core.paths import project_root
from bcos_lib.core.registry import method_of

pytestmark = pytest.mark.slow
ROOT = project_root()
DVC = [sys.executable, "-m", "dvc"]


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd)}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _outputs(stage: dict) -> list[str]:
    out = []
    for kind in ("outs", "metrics", "plots"):
        for o in stage.get(kind, []):
            out.append(next(iter(o)) if isinstance(o, dict) else o)
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of the tracked project whose dvc.lock says every stage is up to date."""
    dst = tmp_path_factory.mktemp("stale") / "project"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        # results/convergence.json and results/fidelity.json are inputs (measured by scripts/convergence.py
        # and scripts/fidelity.py, outside the pipeline), not outputs
        if src.is_file() and (not f.startswith(("results/", "figures/", "models/"))
                              or f in ("results/convergence.json", "results/fidelity.json")) \
                and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    # the code as it is in the working tree (new modules not yet committed included)
    shutil.rmtree(dst / "bcos_lib")
    shutil.copytree(ROOT / "bcos_lib", dst / "bcos_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", dst / "dvc.yaml")
    _run(["git", "init", "-q"], dst)
    (dst / "data" / "fashion-mnist").mkdir(parents=True)
    (dst / "data" / "fashion-mnist" / "stand-in.txt").write_text("data\n")
    _run([sys.executable, "-m", "bcos_lib.settings"], dst)
    stages = yaml.safe_load((dst / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for out in _outputs(stage):
            p = dst / out
            if p.exists():
                continue
            if Path(out).suffix:        # a file
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("stand-in\n")
            else:                       # a folder
                p.mkdir(parents=True, exist_ok=True)
                (p / "stand-in.txt").write_text("stand-in\n")
    _run(DVC + ["commit", "-f", "-q"], dst)
    assert _stale(dst) == set(), "the freshly committed pipeline should be up to date"
    return dst


def _stale(project: Path) -> set[str]:
    status = json.loads(_run(DVC + ["status", "--json"], project) or "{}")
    return {name for name, changes in status.items()
            if any("changed deps" in c or "changed outs" in c for c in changes if isinstance(c, dict))}


def _after_edit(project: Path, rel: str, edit) -> set[str]:
    path = project / rel
    before = path.read_text()
    try:
        path.write_text(edit(before))
        return _stale(project)
    finally:
        path.write_text(before)


def _comment(text: str) -> str:
    return text + "\n# an edit that changes nothing\n"


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    """model key → the name of its method: the models that have their own stages (a seed replica is
    trained and evaluated in the stages of the model it replicates)."""
    return {k: method_of(e.arch).name for k, e in load_params(ROOT / "params.yaml").models.items()
            if not e.replica_of}


def _per_model(stage: str, keys) -> set[str]:
    return {f"{stage}-{k}" for k in keys}


def test_a_figure_function_reruns_the_figures_and_the_data_samples_only(scratch):
    # the data stage draws the sample grid with the same module
    assert _after_edit(scratch, "bcos_lib/figures.py", _comment) == {"data", "figures"}


def test_the_report_reruns_the_figures_stage_only(scratch):
    # the figures stage writes results/report.md; the readme stage reruns when that file changes
    assert _after_edit(scratch, "bcos_lib/report.py", _comment) == {"figures"}


def test_one_papers_presentation_reruns_the_figures_only(scratch):
    assert _after_edit(scratch, "bcos_lib/methods/coda/present.py", _comment) == {"figures"}


def test_one_papers_layer_reruns_that_papers_models_only(scratch, models):
    coda = [k for k, m in models.items() if m == "CoDA"]
    assert coda
    expected = _per_model("train", coda) | _per_model("evaluate", coda) | {"explain", "figures"}
    assert _after_edit(scratch, "bcos_lib/methods/coda/layers.py", _comment) == expected


def test_the_training_loop_reruns_every_training_and_no_plain_evaluation(scratch, models):
    # A method with training hooks (CSG, DISCOVER, B-cosification) builds its step on the shared
    # default step, so its model side imports bcos_lib.train, and what loads those models (their
    # evaluate stages, explain, figures) runs that file too.  A model of a method without hooks,
    # evaluated with the shared metrics only, does not: its evaluation stays.
    from bcos_lib.core.registry import SHARED_METRICS, get_method
    params = load_params(ROOT / "params.yaml")
    stale = _after_edit(scratch, "bcos_lib/train.py", _comment)
    assert _per_model("train", models) <= stale
    assert not stale & {"settings", "data", "readme"}
    plain = [k for k, m in models.items() if get_method(m).training is None
             and set(params.evaluate_config(k).metrics) <= set(SHARED_METRICS) and not params.model(k).init_from]
    assert {"std_cnn", "bcos_cnn", "coda_net"} <= set(plain)
    assert not stale & _per_model("evaluate", plain)


def test_params_of_one_model_rerun_that_model_only(scratch, models):
    """An edit of params.yaml first reruns the settings stage (a few seconds); its files then change
    for the edited model's training alone (and the claims ledger, which matches its under-training
    checks to the settings a model was trained with: it reruns after that training anyway)."""
    key = next(k for k, m in models.items() if m == "CoDA" and k != "coda_net")
    params = scratch / "params.yaml"
    before = params.read_text()
    head, sep, rest = before.partition(f"\n  {key}:\n")
    assert sep, key
    entry, nl, tail = rest.partition("\n\n")
    edited = entry.replace("train: {epochs: 1,", "train: {epochs: 2,", 1)
    assert edited != entry, entry
    try:
        params.write_text(head + sep + edited + nl + tail)
        assert _stale(scratch) == {"settings"}
        _run([sys.executable, "-m", "bcos_lib.settings"], scratch)
        assert _stale(scratch) == {"settings", f"train-{key}", "claims"}
    finally:
        params.write_text(before)
        _run([sys.executable, "-m", "bcos_lib.settings"], scratch)
    assert _stale(scratch) == set()


def test_a_label_reruns_the_explain_and_figures_stages_only(scratch):
    params = scratch / "params.yaml"
    before = params.read_text()
    assert "label: CoDA Net (T=10)" in before
    try:
        params.write_text(before.replace("label: CoDA Net (T=10)", "label: CoDA net, T = 10"))
        _run([sys.executable, "-m", "bcos_lib.settings"], scratch)
        # explain saves each model's label with its explanations; training and evaluation do not read it
        assert _stale(scratch) == {"settings", "explain", "figures"}
    finally:
        params.write_text(before)
        _run([sys.executable, "-m", "bcos_lib.settings"], scratch)
