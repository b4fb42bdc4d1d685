"""Shared test set-up.

* Everything the tests (and the notebooks under nbval) write goes to a temporary output
  root (``BCOS_OUTPUT_ROOT``), never into the project's models/, results/ or figures/.
* Notebook cells (nbval) form one xdist group, so ``pytest -n 2 --dist loadgroup`` runs the
  notebooks in order on one worker (30_explain needs the models 20_train made).
"""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("BCOS_OUTPUT_ROOT", tempfile.mkdtemp(prefix="bcos-tests-"))
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.xdist_group("notebooks"))
