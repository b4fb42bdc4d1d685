"""Sharing results through a DVC remote (issue 21), with a local-directory remote.

What the README documents: on the machine that ran the pipeline (a GPU machine),
``dvc remote add -d shared <url>`` and ``dvc push``; on a laptop, ``git clone`` of the
committed project, ``dvc pull``, and then ``dvc repro`` reruns nothing: the models, metrics,
figures and executed notebooks arrived with the hashes ``dvc.lock`` records.  The pulled
model file loads with ``weights_only=True`` (an untrusted file cannot run code).

The copy holds the working tree with one small model, ``std_cnn``, in the tiny profile.
"""
from __future__ import annotations

import shutil


from bcos_lib.core.pipeline import load_model
from test_dvc_recovery import GIT, new_project, pytestmark, sh  # noqa: F401 - the same skips (slow, dvc, data)


def test_push_on_one_machine_pull_on_another_then_nothing_reruns(tmp_path):
    gpu = new_project(tmp_path / "gpu-machine", profile="tiny")
    sh(["python", "-m", "bcos_lib.dvcgen"], gpu)   # dvc.yaml for the one model
    sh(["dvc", "repro"], gpu, timeout=1500)
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-d", "shared", str(remote)], gpu)
    sh(["dvc", "add", "data"], gpu)   # the data set, cached here so that it travels too (same hash as data.dvc)
    sh(GIT + ["add", "-A"], gpu)
    sh(GIT + ["commit", "-q", "-m", "results and the remote"], gpu)
    assert sh(["git", "status", "--porcelain"], gpu).stdout == ""
    sh(["dvc", "push"], gpu, timeout=600)
    assert any(p.is_file() for p in remote.rglob("*")), "dvc push wrote nothing to the remote"

    laptop = tmp_path / "laptop" / "clone"
    sh(["git", "clone", "-q", str(gpu), str(laptop)], tmp_path)
    assert not (laptop / "models" / "std_cnn.pt").exists()
    sh(["dvc", "pull"], laptop, timeout=600)
    for rel in ("models/std_cnn.pt", "figures/training_curves.png", "results/train/std_cnn/metrics.json",
                "results/notebooks/20_train_std_cnn.ipynb", "data/fashion-mnist/train-images-idx3-ubyte"):
        assert (laptop / rel).read_bytes() == (gpu / rel).read_bytes(), rel
    status = sh(["dvc", "status"], laptop).stdout
    assert "up to date" in status, status
    rerun = sh(["dvc", "repro"], laptop, timeout=600)
    assert "Running stage" not in rerun.stdout, rerun.stdout
    assert sh(["git", "status", "--porcelain", "--untracked-files=all"], laptop).stdout == ""
    assert load_model(laptop / "models" / "std_cnn.pt").model_name == "std_cnn"   # weights_only=True

    # the test must be able to fail: a pulled model that differs from the lock is rerun
    shutil.copy(gpu / "params.yaml", laptop / "params.yaml")
    (laptop / "models" / "std_cnn.pt").write_bytes(b"not the pushed model")
    assert "modified" in sh(["dvc", "status"], laptop).stdout
