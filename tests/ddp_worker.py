"""Run by tests/test_speed.py under ``torchrun --nproc_per_node 2``: a short data-parallel
``fit`` (gloo on CPU) whose weights and history rank 0 writes to ``<out>/ddp.pt``."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from bcos_lib.train import fit, is_main_process

from test_speed import ddp_case   # the same model, data and config as the single-process run

torch.set_num_threads(1)
out = Path(sys.argv[1])
model, data, cfg = ddp_case()
history = fit(model, data, None, cfg, seed=0, checkpoint_path=out / "ddp.ckpt", fingerprint="ddp", progress=False)
if is_main_process():
    torch.save({"state_dict": model.state_dict(), "history": history}, out / "ddp.pt")
