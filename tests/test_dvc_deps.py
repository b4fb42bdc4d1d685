"""dvc.yaml lists every piece of code a stage runs, so that `dvc repro` never calls stale
results up to date.

For every stage (each foreach item expanded), the ``bcos_lib`` modules its notebook imports
are followed through their own imports (top level and inside functions), by a scanner written
here independently of ``bcos_lib.dvcgen``; a per-model stage also runs its model's method file.
Each of those files must be covered by one of the stage's deps (the file, or a folder above
it).  The committed dvc.yaml must also be what ``python -m bcos_lib.dvcgen`` writes.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bcos_lib"


def _file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of the bcos_lib modules a source imports (a `from x import y` counts x and x.y)."""
    pkg = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] == "bcos_lib" and _file_of(m)}


def closure(modules: set[str]) -> set[Path]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__
        f = _file_of(m)
        todo += sorted(_imported(f.read_text(), m, f.name == "__init__.py") - seen)
    return {_file_of(m) for m in seen}


def notebook_imports(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
    return _imported(src, "__main__", False)


def _stages() -> list[tuple[str, dict, dict]]:
    """(name, stage, item) for every stage of dvc.yaml, foreach items expanded."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, st in stages.items():
        if "foreach" in st:
            for key, item in st["foreach"].items():
                out.append((f"{name}@{key}", st["do"], {"key": key, "item": item}))
        else:
            out.append((name, st, {}))
    return out


def _expand(text: str, ctx: dict) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "key":
            return ctx["key"]
        if name.startswith("item."):
            return ctx["item"][name[5:]]
        return m.group(0)  # params interpolation (${base.profile}) is not a path
    return re.sub(r"\$\{([^}]+)\}", sub, text)


def _covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


STAGES = _stages()


@pytest.mark.parametrize("name,stage,ctx", STAGES, ids=[s[0] for s in STAGES])
def test_stage_lists_every_module_it_runs(name, stage, ctx):
    cmd = _expand(stage["cmd"], ctx)
    deps = [_expand(d, ctx) for d in stage.get("deps", [])]
    notebooks = re.findall(r"(notebooks/\S+\.ipynb)", cmd)
    if notebooks:
        nb = ROOT / notebooks[0]
        assert notebooks[0] in deps, f"{name}: its notebook {notebooks[0]} is not a dependency"
        modules = notebook_imports(nb)
    else:
        modules = set(re.findall(r"python -m (bcos_lib[\w.]*)", cmd))
        assert modules, f"{name}: cannot tell what code `{cmd}` runs"
    if ctx:  # a per-model stage runs its model's method file (discovered at run time)
        method_file = ROOT / ctx["item"]["method"]
        assert method_file.is_file() and method_file.parent == PKG / "methods", ctx["item"]
        rel = method_file.relative_to(ROOT).with_suffix("")
        modules.add(".".join(rel.parts))
    missing = sorted(str(f.relative_to(ROOT)) for f in closure(modules) if not _covered(f, deps))
    assert not missing, f"{name} runs {missing} but dvc.yaml does not list them as dependencies"


def test_every_model_has_its_method_file_and_start():
    from bcos_lib.config import load_params
    from bcos_lib.methods import method_of
    import sys
    params = load_params()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    items = stages["train"]["foreach"]
    assert list(items) == list(params.models)
    for key, entry in params.models.items():
        module = sys.modules[method_of(entry.arch).module]
        assert (ROOT / items[key]["method"]).resolve() == Path(module.__file__).resolve()
        start = f"models/{entry.init_from}.pt" if entry.init_from else "results/data/summary.json"
        assert items[key]["start"] == start


def test_dvc_yaml_is_what_the_generator_writes():
    from bcos_lib.dvcgen import render
    assert (ROOT / "dvc.yaml").read_text() == render(ROOT), \
        "dvc.yaml is out of date: run `python -m bcos_lib.dvcgen` (make dvc.yaml)"


def test_the_scanner_sees_function_level_and_relative_imports():
    """The checker itself: a module imported only inside a function is found (so the test can fail)."""
    found = closure({"bcos_lib.stages.evaluate"})
    assert PKG / "metrics.py" in found        # imported inside methods/__init__._ensure_metrics
    assert PKG / "stages" / "__init__.py" in found
    assert PKG / "methods" / "bcos.py" not in found  # method files are discovered, not imported by name


def _metric_files() -> dict[str, Path]:
    """metric name → the method file that registers it, read from the sources (not the registry)."""
    out = {}
    for f in sorted((PKG / "methods").glob("*.py")):
        for name in re.findall(r'register_metric\(\s*Metric\(\s*"([^"]+)"', f.read_text()):
            out[name] = f
    return out


def _profile_views():
    from bcos_lib.config import load_params
    params = load_params()
    return [load_params(None, name) for name in sorted({"default", *params.profiles})]


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_stage_lists_the_method_files_of_the_metrics_it_runs(stage):
    """The CSG metrics on an ungated twin, dissection on the ReLU twin, the margin study's per-epoch
    localisation on a B-cos CNN: their method file is code the stage runs, in every profile."""
    files = _metric_files()
    assert {"mis", "dissection", "tracked_localisation", "fixed_grid_localisation"} <= set(files)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    do = stages[stage]["do"]
    foreign = 0
    for key, item in stages[stage]["foreach"].items():
        deps = [_expand(d, {"key": key, "item": item}) for d in do["deps"]]
        for params in _profile_views():
            if key not in params.models:
                continue
            names = (params.train_config(key).epoch_metrics if stage == "train"
                     else params.evaluate_config(key).metrics)
            for name in names:
                if name in files:
                    foreign += files[name] != ROOT / item["method"]
                    assert _covered(files[name], deps), \
                        f"{stage}@{key} runs the metric {name!r} of {files[name].name} but does not depend on it"
    assert foreign, "no model runs another method's metric: the test checks nothing"


def _cached_outputs() -> list[str]:
    """Every output DVC keeps in its cache (not ``cache: false``), foreach items expanded."""
    out = []
    for name, stage, ctx in STAGES:
        for o in stage.get("outs", []):
            path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
            if opts.get("cache", True):
                out.append(_expand(path, ctx) if ctx else path)
    return out


def test_dvc_cached_outputs_are_ignored_by_git_and_not_tracked():
    """A cached output committed to git makes `dvc repro` stop in a fresh clone ("already tracked
    by SCM"); one not ignored shows up as untracked after `make repro`."""
    import subprocess
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outs = _cached_outputs()
    assert any(o.startswith("results/explain/") for o in outs) and any(o.startswith("models/") for o in outs)
    tracked = subprocess.run(["git", "ls-files", "--", *outs], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert not tracked, f"DVC outputs tracked by git (git rm --cached them): {tracked}"
    checked = subprocess.run(["git", "check-ignore", "--no-index", *outs], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert sorted(checked) == sorted(outs), f"DVC outputs git does not ignore: {sorted(set(outs) - set(checked))}"


def test_stages_depend_on_the_active_profile_only(tmp_path):
    """`profiles.${base.profile}`: editing another profile reruns nothing; a params.yaml whose
    active profile has no entry gets a message that says what to add."""
    from bcos_lib.config import ConfigError
    from bcos_lib.dvcgen import render
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        params = (st.get("do") or st).get("params", [])
        if params:
            assert "profiles" not in params and "profiles.${base.profile}" in params, name
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["profiles"]["default"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"add `default: \{\}` under `profiles:`"):
        render(ROOT, bad)


def test_an_entry_for_the_default_profile_is_merged(tmp_path):
    from bcos_lib.config import load_params
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["base"]["profile"] = "default"
    raw["profiles"]["default"] = {"train": {"epochs": 7}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_params(path).train.epochs == 7


# ----------------------------------------------------------------------------- dvc.lock hygiene
_LOCK = """schema: '2.0'
stages:
  data:
    cmd: python -m bcos_lib.runner notebooks/10_data.ipynb out.ipynb
    outs:
    - path: results/data/summary.json
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
      size: 10
  explain@std_cnn:
    cmd: python -m bcos_lib.runner notebooks/30_explain.ipynb x.ipynb
  train@std_cnn:
    cmd: python -m bcos_lib.runner notebooks/20_train.ipynb y.ipynb
  train@gone:
    cmd: python -m bcos_lib.runner notebooks/20_train.ipynb z.ipynb
"""


def test_dvcgen_drops_the_lock_entries_of_stages_dvc_yaml_no_longer_has(tmp_path):
    """`dvc repro` keeps a removed stage's lock entry for ever (24 of them were 5 000 of the
    lock's lines, parsed several times per stage); dvcgen drops them and keeps the rest as DVC
    wrote it (the real lock round-trips byte for byte through the same YAML settings)."""
    from bcos_lib.dvcgen import prune_lock, stage_names

    names = stage_names("stages:\n  data: {cmd: a}\n  train:\n    foreach: {std_cnn: {}, bcos_cnn: {}}\n"
                        "    do: {cmd: b}\n  explain: {cmd: c}\n")
    assert names == {"data", "train@std_cnn", "train@bcos_cnn", "explain"}
    lock = tmp_path / "dvc.lock"
    lock.write_text(_LOCK)
    assert prune_lock(tmp_path, names) == ["explain@std_cnn", "train@gone"]
    kept = lock.read_text()
    assert "explain@std_cnn" not in kept and "train@gone" not in kept
    assert kept == _LOCK.replace(_LOCK[_LOCK.index("  explain@std_cnn:"):_LOCK.index("  train@std_cnn:")], "") \
        .replace(_LOCK[_LOCK.index("  train@gone:"):], "")  # the rest byte for byte
    before = lock.stat().st_mtime_ns
    assert prune_lock(tmp_path, names) == [] and lock.stat().st_mtime_ns == before  # nothing to drop: not written


def test_the_committed_lock_has_no_stale_stage():
    from bcos_lib.dvcgen import stage_names

    names = stage_names((ROOT / "dvc.yaml").read_text())
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= names, f"dvc.lock has entries of stages dvc.yaml does not: {sorted(locked - names)}"
