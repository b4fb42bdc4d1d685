"""The evaluation benchmark (`make bench`) runs and its batched and loop scores agree."""
from __future__ import annotations

import importlib.util
import sys
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


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod   # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_make_bench_prints_every_row_and_writes_json(tmp_path, capsys):
    """`make bench --quick`: the whole table in one process (what runs, not how fast: no timed assertion)."""
    import json

    out = tmp_path / "bench.json"
    rc = _load("bench").main(["--quick", "--threads", "1", "--data", str(tmp_path / "none"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    saved = json.loads(out.read_text())
    names = [r["name"] for r in saved["rows"]]
    for expected in ("B-cos conv MaxOut 1 ÷ nn.Conv2d, pipeline", "B-cos conv MaxOut 2 ÷ nn.Conv2d, pipeline",
                     "B-cos conv MaxOut 1 ÷ nn.Conv2d, batch", "B-cos conv MaxOut 2 ÷ nn.Conv2d, batch",
                     "Dynamic alignment unit", "LWTA ÷ ReLU", "class-specific gate", "training images/s: bcos_cnn ÷ std_cnn",
                     "with channels_last", "with bf16 autocast", "data loading: std_cnn step", "one-image loop ÷ batched explain",
                     "per-class loop ÷ batched", "side by side: training images/s of 2 one-thread processes of std_cnn",
                     "test images/s: bcos_cnn in batches of 128 ÷ of 1 000", "test images/s: coda_net in batches of 64",
                     "DAU ‖w(x)‖², forward: einsum ÷ packed", "DAU ‖w(x)‖², forward + backward: einsum ÷ packed"):
        assert any(expected in n for n in names), (expected, names)
        assert expected in printed
    for r in saved["rows"]:
        family_missing = r["note"].startswith("not present")
        assert (r["ratio"] is None) == family_missing or r["note"].startswith("present but"), r
        if r["ratio"] is not None:
            assert r["low"] <= r["ratio"] <= r["high"] and r["ratio"] > 0, r
    # a layer family is reported as absent only when no method package's layers define it
    import importlib

    from bcos_lib.core.registry import list_methods
    mods = [importlib.import_module(f"{m.package}.layers") for m in list_methods() if m.side("layers") is not None]
    exported = " ".join(n.lower() for mod in mods for n in dir(mod) if isinstance(getattr(mod, n), type))
    for key, title in (("dynamicalignmentconv", "Dynamic alignment unit"), ("lwta", "LWTA"),
                       ("classspecificgate", "class-specific gate")):
        row = next(r for r in saved["rows"] if r["name"].startswith(title))
        assert row["note"].startswith("not present") == (key not in exported), row
    grid = next(r for r in saved["rows"] if r["name"].startswith("grid evaluation"))
    assert float(grid["note"].rsplit(" ", 1)[1]) < 1e-4   # the batched scores equal the loop's
