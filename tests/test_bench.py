"""The evaluation benchmark (`make bench`) runs and its batched and loop scores agree."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_evaluate", ROOT / "scripts" / "bench_evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("model_args", [[], ["--arch", "bcos_cnn"]])
def test_bench_runs_and_agrees_with_the_loop(tmp_path, capsys, model_args):
    # no data under tmp_path: the benchmark falls back to random images (it measures speed only)
    rc = _bench().main(["--data", str(tmp_path / "none"), "--grids", "2", "--loop-grids", "1", "--repeats", "1",
                        "--threads", "1", *model_args])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "speed-up (batched / loop):" in out
    diff = float(out.rsplit("the loop's:", 1)[1].split()[0])
    assert diff < 1e-4
    assert ("models.bcos_cnn of params.yaml" in out) == (not model_args)
