"""bcos_lib.runner, the command every dvc.yaml stage runs (issue 20, defects 2, 4, 6 and 10).

Unit tests of the notebook normalisation, then the command itself on small notebooks in a
scratch project: a params.yaml mistake stops it in one line before anything is written; a
failing notebook leaves the previous output alone, keeps the failed one aside and ends with
the exception; two runs that compute the same thing write the same bytes; and the kernel's
"running over TCP without encryption" warning does not appear.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from bcos_lib.runner import failed_path, normalise_notebook, render_stream, resolve_value

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("text, shown", [
    ("plain\ntext\n", "plain\ntext\n"),
    ("no newline", "no newline"),
    # a tqdm bar with leave=False: drawn, redrawn, erased with spaces, then a log line over it
    ("\repoch 1/3:  50%|█▌ | 1/2 [00:01<00:01, 0.93it/s]\repoch 1/3: 100%|███| 2/2 [00:02<00:00, 0.95it/s]"
     "\r                                                \repoch 1/3: loss 0.5\n", "epoch 1/3: loss 0.5\n"),
    ("\rbar 10%\rbar 20%\r        \r", ""),         # an erased bar at the end leaves nothing
    ("abcdef\rxy\n", "xycdef\n"),                    # as a terminal: the rest of the longer line stays
    ("first\n\rbar\r   \rsecond\n", "first\nsecond\n"),
])
def test_render_stream_shows_what_a_terminal_shows(text, shown):
    assert render_stream(text) == shown


def _executed_notebook(start: str, duration: float, random_id: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.id = random_id
    params.metadata = {"tags": ["injected-parameters"], "papermill": {"start_time": start, "duration": duration,
                                                                       "status": "completed", "exception": False}}
    cell = nbformat.v4.new_code_cell("print('hi')", id="cell-1")
    cell.metadata = {"execution": {"iopub.status.busy": start}, "papermill": {"end_time": start, "status": "completed"}}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\rbar 1%"),
                    nbformat.v4.new_output("stream", name="stdout", text=f"\rbar {duration}s\r          "),
                    nbformat.v4.new_output("stream", name="stdout", text="\rhi\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="a warning\n")]
    nb.cells = [params, cell]
    nb.metadata["papermill"] = {"start_time": start, "end_time": start, "duration": duration,
                                "output_path": "/tmp/.x.ipynb.abc.tmp.ipynb", "parameters": {"x": 1}}
    return nb


def test_normalise_notebook_removes_what_varies_between_runs():
    a = normalise_notebook(_executed_notebook("2026-01-01T00:00:00", 1.5, "a1b2c3d4"), "results/notebooks/x.ipynb")
    b = normalise_notebook(_executed_notebook("2026-02-02T10:00:00", 7.25, "e5f6a7b8"), "results/notebooks/x.ipynb")
    assert nbformat.writes(a) == nbformat.writes(b)
    assert a.metadata.papermill == {"output_path": "results/notebooks/x.ipynb", "parameters": {"x": 1}}
    params, cell = a.cells
    assert params.id == "injected-parameters"
    assert params.metadata.papermill == {"status": "completed", "exception": False}
    assert "execution" not in cell.metadata
    assert [(o.name, o.text) for o in cell.outputs] == [("stdout", "hi\n"), ("stderr", "a warning\n")]
    nbformat.validate(a)
    # idempotent: normalising a normalised notebook changes nothing
    assert nbformat.writes(normalise_notebook(a, "results/notebooks/x.ipynb")) == nbformat.writes(b)


def test_failed_path_and_parameter_values():
    assert failed_path("results/notebooks/20_train_std_cnn.ipynb") == Path("results/notebooks/20_train_std_cnn.failed.ipynb")
    assert [resolve_value(v) for v in ("3", "0.5", "True", "None", "std_cnn", ".")] == [3, 0.5, True, None, "std_cnn", "."]


def test_failed_notebooks_and_runner_temporaries_are_git_ignored():
    names = ["results/notebooks/20_train_std_cnn.failed.ipynb", "results/notebooks/.20_train_std_cnn.ipynb.x1.tmp.ipynb",
             "results/timing/train_std_cnn.json", "dvc_plots/index.html"]
    p = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO, capture_output=True, text=True)
    assert sorted(p.stdout.split()) == sorted(names), p.stdout + p.stderr


# ----------------------------------------------------------------------------- the command
def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "tiny"\nvalue = 0', id="params")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s, id=f"c{i}") for i, s in enumerate(sources)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    """A scratch project root: the repository's params.yaml and bcos_lib (linked), two notebooks."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "bcos_lib").symlink_to(REPO / "bcos_lib")
    (root / "nb").mkdir()
    _notebook(root / "nb" / "good.ipynb",
              "import sys\nfor i in range(3):\n    print(f'\\rstep {i} of 3, {i * 0.37:.2f} s', end='')\n"
              "print('\\r' + ' ' * 30 + '\\r', end='')\nprint(f'value {value} with profile {profile}')",
              "value * 2")
    _notebook(root / "nb" / "bad.ipynb", "print('working')",
              "raise ValueError('the input is wrong:\\nsee the docs')")
    return root


ENGINES = ["in-process", "kernel"]


def runner(project: Path, *args: str, engine: str = "in-process") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BCOS_PROJECT_ROOT", "BCOS_OUTPUT_ROOT", "PYTHONPATH", "BCOS_RUNNER_KERNEL")}
    if engine == "kernel":
        env["BCOS_RUNNER_KERNEL"] = "1"
    return subprocess.run([sys.executable, "-m", "bcos_lib.runner", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("engine", ENGINES)
def test_good_run_writes_the_same_bytes_twice_without_the_tcp_warning(project, engine):
    out = project / "results" / "nb" / "good.ipynb"
    first = runner(project, "nb/good.ipynb", "results/nb/good.ipynb", "-p", "profile", "tiny", "-p", "value", "21",
                   engine=engine)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "value 21 with profile tiny" in first.stdout
    assert "without encryption" not in first.stdout + first.stderr
    assert "Executing Cell" not in first.stdout + first.stderr  # papermill's per-cell log lines
    once = out.read_bytes()
    nb = nbformat.reads(once.decode(), as_version=4)
    assert [o.text for o in nb.cells[2].outputs] == ["value 21 with profile tiny\n"]
    assert [(o.output_type, o.data) for o in nb.cells[3].outputs] == [("execute_result", {"text/plain": "42"})]
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]
    assert nb.metadata.papermill["output_path"] == "results/nb/good.ipynb"
    second = runner(project, "nb/good.ipynb", "results/nb/good.ipynb", "-p", "profile", "tiny", "-p", "value", "21",
                    engine=engine)
    assert second.returncode == 0, second.stdout + second.stderr
    assert out.read_bytes() == once
    assert sorted(p.name for p in out.parent.iterdir()) == ["good.ipynb"]  # no temporary or failed notebook left


@pytest.mark.parametrize("engine", ENGINES)
def test_failing_notebook_keeps_the_output_and_ends_with_the_exception(project, engine):
    out = project / "results" / "bad.ipynb"
    out.parent.mkdir()
    out.write_text("the good result of an earlier run")
    p = runner(project, "nb/bad.ipynb", "results/bad.ipynb", "-p", "profile", "tiny", engine=engine)
    assert p.returncode == 1
    assert "working" in p.stdout and "ValueError" in p.stderr   # the cell's output and traceback, live
    assert p.stderr.strip().splitlines()[-1] == "error: ValueError: the input is wrong: see the docs"
    assert "results/bad.failed.ipynb" in p.stderr
    assert out.read_text() == "the good result of an earlier run"
    failed = nbformat.read(project / "results" / "bad.failed.ipynb", as_version=4)
    errors = [o for c in failed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [(o.ename, o.evalue) for o in errors] == [("ValueError", "the input is wrong:\nsee the docs")]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in errors[0].traceback]   # (a kernel colours it)
    assert any("raise ValueError" in line for line in plain), plain
    assert sorted(q.name for q in out.parent.iterdir()) == ["bad.failed.ipynb", "bad.ipynb"]
    # once the notebook succeeds, the failed one goes
    shutil.copy(project / "nb" / "good.ipynb", project / "nb" / "bad.ipynb")
    p = runner(project, "nb/bad.ipynb", "results/bad.ipynb", "-p", "profile", "tiny", "-p", "value", "1",
               engine=engine)
    assert p.returncode == 0, p.stderr
    assert sorted(q.name for q in out.parent.iterdir()) == ["bad.ipynb"]


@pytest.mark.parametrize("typo, line", [
    ({"epoch": 5}, "error: params.yaml: unknown key train.epoch; allowed here: epochs, batch_size"),
    ({"epochs": "four"}, "error: params.yaml: train.epochs: expected an integer, got 'four' (str)"),
    ({"lr": -0.001}, "error: params.yaml: train.lr must be > 0 (got -0.001)"),
    ({"batch_size": 0}, "error: params.yaml: train.batch_size must be ≥ 1 (got 0)"),
])
def test_params_mistake_stops_in_one_line_before_anything_runs(project, typo, line):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(typo)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = project / "results" / "good.ipynb"
    out.parent.mkdir()
    out.write_text("previous")
    p = runner(project, "nb/good.ipynb", "results/good.ipynb", "-p", "profile", "tiny")
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), p.stderr
    assert lines[0].count("params.yaml") == 1
    assert out.read_text() == "previous" and sorted(q.name for q in out.parent.iterdir()) == ["good.ipynb"]


def test_an_output_folder_that_cannot_be_written_stops_in_one_line_before_anything_runs(project):
    (project / "results").write_text("a file where the results folder should be")
    p = runner(project, "nb/good.ipynb", "results/nb/good.ipynb", "-p", "profile", "tiny")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("error: cannot write the executed notebook results/nb/good.ipynb: "), lines[0]
    assert lines[0].endswith("make results/nb a writable folder (nothing was run)"), lines[0]
    assert "value" not in p.stdout


def test_a_failed_stage_does_not_print_the_kernels_shutdown_interrupt(project):
    """jupyter_client interrupts the kernel before shutting it down; a kernel still busy then logs
    "KeyboardInterrupt caught in kernel", which reads as if the user had pressed Ctrl-C. The
    notebook here logs that line itself (what the kernel does, made certain) before it fails."""
    _notebook(project / "nb" / "interrupted.ipynb",
              "get_ipython().kernel.log.error('KeyboardInterrupt caught in kernel.')\nraise ValueError('the real cause')")
    p = runner(project, "nb/interrupted.ipynb", "results/i.ipynb", "-p", "profile", "tiny", engine="kernel")
    assert p.returncode == 1
    assert "KeyboardInterrupt" not in p.stdout + p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "error: ValueError: the real cause"


def test_unknown_model_key_and_profile_stop_before_anything_runs(project):
    p = runner(project, "nb/good.ipynb", "results/good.ipynb", "-p", "profile", "tiny", "-p", "models", "std_cnn,bcos")
    assert p.returncode == 2
    from bcos_lib.core.config import load_params
    defined = ", ".join(load_params(project / "params.yaml", "tiny").models)   # seed replicas included
    assert p.stderr.strip() == ("error: params.yaml: no model 'bcos' in `models` (asked for by `-p models std_cnn,bcos`); "
                                f"defined: {defined} (nothing was run or written: fix it and run again)")
    p = runner(project, "nb/good.ipynb", "results/good.ipynb", "-p", "profile", "huge")
    assert p.returncode == 2 and "unknown profile 'huge'; defined in `profiles`: default, tiny, gpu" in p.stderr
    assert not (project / "results").exists()


def test_a_passed_check_is_remembered_and_any_change_checks_again(project, monkeypatch):
    """The runner's check imports torch and every method (~2 s): the stages of one `dvc repro`
    check the same params.yaml once, whatever models each asks for (the remembered check keeps the
    profile's model keys, and an unknown key is still refused from it).  A different file, profile
    or library source gives another key, so a mistake is never hidden by an earlier pass."""
    from bcos_lib import runner as r
    from bcos_lib.core import config

    monkeypatch.chdir(project)
    monkeypatch.delenv("BCOS_PROJECT_ROOT", raising=False)
    good = {"profile": "tiny", "models": "std_cnn"}
    key = r.check_key(project, good)
    assert key != r.check_key(project, {"profile": "default", "models": "std_cnn"})
    assert key == r.check_key(project, {"profile": "tiny", "models": "bcos_cnn"})
    r.check_params(good)
    assert sorted(p.name for p in (project / r.CHECKED_DIR).iterdir()) == [key]
    calls = []
    monkeypatch.setattr(config, "load_params", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        config.ConfigError("params.yaml: checked again")))
    r.check_params(good)  # remembered: not checked again
    r.check_params({"profile": "tiny", "models": "bcos_cnn,std_cnn"})   # other models, same file: remembered
    assert calls == []
    with pytest.raises(config.ConfigError, match="no model 'bcos_cnnn' in `models`"):
        r.check_params({"profile": "tiny", "models": "bcos_cnnn"})   # refused from the remembered keys
    with pytest.raises(config.ConfigError, match="checked again"):
        r.check_params(good, use_cache=False)
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text + "\n# an edit\n")
    assert r.check_key(project, good) != key
    with pytest.raises(config.ConfigError, match="checked again"):
        r.check_params(good)  # the file changed: checked again, and the failure is not remembered
    assert sorted(p.name for p in (project / r.CHECKED_DIR).iterdir()) == [key]


def test_the_runner_starts_without_importing_torch(project):
    """A remembered check needs no torch: the stage's kernel is what imports it."""
    code = ("import sys; from bcos_lib import runner; runner.check_params({'profile': 'tiny'}); "
            "runner.check_params({'profile': 'tiny'}); print('torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("BCOS_PROJECT_ROOT", "PYTHONPATH")}
    first = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True)
    assert first.stdout.strip() == "True", first.stderr  # the first check imports it
    second = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True)
    assert second.stdout.strip() == "False", second.stderr


def test_dvc_yaml_runs_every_notebook_through_the_runner():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    cmds = {name: (s.get("do") or s)["cmd"] for name, s in stages.items()}
    notebook_stages = [n for n, c in cmds.items() if ".ipynb" in c]
    assert notebook_stages, cmds
    for name in notebook_stages:
        assert cmds[name].startswith("python -m bcos_lib.runner notebooks/"), (name, cmds[name])
        assert "papermill" not in cmds[name], (name, cmds[name])
