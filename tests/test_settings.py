"""The settings stage (bcos_lib.settings): each stage's resolved settings, and the first clear word
when something the pipeline needs is missing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from bcos_lib.core.config import load_params
from bcos_lib.settings import stage_settings, write_settings

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_data_folder_is_named_with_make_data(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["root"] = str(tmp_path / "nowhere")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    p = subprocess.run([sys.executable, "-m", "bcos_lib.settings", "--params", str(params), "--out", str(tmp_path / "s")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nowhere" in errors[0] and "make data" in errors[0], p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "s").exists()


def test_each_stage_gets_what_it_reads_and_nothing_else(tmp_path):
    p = load_params(ROOT / "params.yaml")
    s = stage_settings(p)
    train = s["train/bcos_cnn.json"]
    assert train["train"]["epochs"] == p.train_config("bcos_cnn").epochs
    assert set(train["model"]) == {"arch", "kwargs", "options", "init_from"}   # no label, group, twin
    assert "evaluate" not in train and "train" not in s["evaluate/bcos_cnn.json"]
    assert "train" not in s["figures.json"]["models"]["bcos_cnn"]
    written = write_settings(p, tmp_path)
    assert len(written) == len(s)
    assert write_settings(p, tmp_path) == []                      # unchanged settings: nothing rewritten
    (tmp_path / "train" / "gone.json").write_text("{}")
    write_settings(p, tmp_path)
    assert not (tmp_path / "train" / "gone.json").exists()        # a removed model's file goes
    assert json.loads((tmp_path / "data.json").read_text()) == s["data.json"]
