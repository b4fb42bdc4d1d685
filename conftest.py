"""Shared test set-up.

* Everything the tests (and the notebooks under nbval) write goes to a temporary output
  root (``BCOS_OUTPUT_ROOT``), never into the project's models/, results/ or figures/.
* The notebooks (nbval) run in their own pytest process without xdist (``make test``), in
  order: 30_explain needs the models that 20_train made.
"""
from __future__ import annotations

import os
import tempfile

import torch

os.environ.setdefault("BCOS_OUTPUT_ROOT", tempfile.mkdtemp(prefix="bcos-tests-"))
torch.set_num_threads(1)
