"""Damaged data is never recorded by DVC.

In a scratch copy of the project (git-tracked files and the data), one Fashion-MNIST file is
truncated and ``dvc repro`` is run.  The data stage checks the hashes of the decompressed files
before anything is written: the run stops with a message that names the file and ``make data``,
and nothing in git changes — no ``.dvc`` file or ``dvc.lock`` entry takes the damaged data's
hash (the data folder is a dependency of the data stage, recorded only when that stage succeeds,
not a DVC data source that ``dvc repro`` re-records whatever it holds).
"""
from __future__ import annotations


from test_dvc_recovery import GIT, new_project, pytestmark, sh  # noqa: F401 - the same skips (slow, dvc, data)


def test_a_truncated_data_file_stops_dvc_repro_and_nothing_records_it(tmp_path):
    root = new_project(tmp_path / "project")
    victim = root / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:5000])
    cache_before = sorted(p.relative_to(root) for p in (root / ".dvc").rglob("*") if p.is_file())
    p = sh(["dvc", "repro", "-s", "data"], root, timeout=600, ok=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-4000:]
    assert "t10k-labels-idx1-ubyte has 5000 bytes" in out and "make data" in out, out[-4000:]
    assert sh(["git", "status", "--porcelain"], root).stdout == "", "a file tracked by git changed"
    # nothing of the damaged data in DVC's cache: not the truncated file, not a listing of the data folder
    # (the stage's code folders are hashed as directories too; their listings may be cached)
    import hashlib
    damaged = hashlib.md5(victim.read_bytes()).hexdigest()
    cache = root / ".dvc" / "cache"
    cached = [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []
    new = [p for p in cached if p.relative_to(root) not in cache_before]
    assert not [p for p in new if damaged in "".join(p.relative_to(cache).parts)], "the damaged file was cached"
    assert not [p for p in new if p.suffix == ".dir" and "t10k-labels-idx1-ubyte" in p.read_text()], \
        "DVC cached a listing of the damaged data folder"
