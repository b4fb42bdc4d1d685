"""dvc.yaml lists every piece of code a stage runs, so that `dvc repro` never calls stale
results up to date.

For every stage, the ``bcos_lib`` modules its notebook imports are followed through their own
imports (top level and inside functions), by a scanner written here independently of
``bcos_lib.dvcgen``; a stage also runs what the registry imports by name (its model's method
side, the metrics it runs).
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


def _stages() -> list[tuple[str, dict]]:
    """(name, stage) for every stage of dvc.yaml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return list(stages.items())


def _covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


STAGES = _stages()


def _runtime_modules(name: str) -> set[str]:
    """What the registry imports by name (not visible to a scanner of imports) for stage ``name``:
    a per-model stage builds its model (the model side of its method, and of every model of its
    ``init_from`` chain) and runs the metrics its settings name; explain builds every model; the
    figures stage draws every method's figures and reads every metric's tables."""
    from bcos_lib.core.config import load_params
    from bcos_lib.core.registry import list_methods, method_of, metric_module

    views = [load_params(None, p) for p in _profiles()]
    params = views[0]
    kind, _, key = name.partition("-")
    out: set[str] = set()

    def sides(method, which):
        return {method.package} | {f"{method.package}.{s}" for s in which if _file_of(f"{method.package}.{s}")}

    if key:
        k = key
        while k:
            out |= sides(method_of(params.model(k).arch), ("model",))
            k = params.model(k).init_from
        for v in views:
            if key in v.models:
                names = v.train_config(key).epoch_metrics if kind == "train" else v.evaluate_config(key).metrics
                out |= {metric_module(n) for n in names}
    elif kind == "explain":
        for m in list_methods():
            out |= sides(m, ("model",))
    elif kind == "figures":
        for m in list_methods():
            out |= sides(m, ("model", "metrics", "present"))
    return out


def _profiles() -> list[str]:
    from bcos_lib.core.config import load_params
    return sorted({"default", *load_params().profiles}, key=lambda p: p != "default")


@pytest.mark.parametrize("name,stage", STAGES, ids=[s[0] for s in STAGES])
def test_stage_lists_every_module_it_runs(name, stage):
    cmd = stage["cmd"]
    deps = stage.get("deps", [])
    notebooks = re.findall(r"(notebooks/\S+\.ipynb)", cmd)
    if notebooks:
        nb = ROOT / notebooks[0]
        assert notebooks[0] in deps, f"{name}: its notebook {notebooks[0]} is not a dependency"
        modules = notebook_imports(nb)
    else:
        modules = set(re.findall(r"python -m (bcos_lib[\w.]*)", cmd))
        assert modules, f"{name}: cannot tell what code `{cmd}` runs"
    modules |= _runtime_modules(name)
    missing = sorted(str(f.relative_to(ROOT)) for f in closure(modules) if not _covered(f, deps)
                     and not _docstring_only(f))
    assert not missing, f"{name} runs {missing} but dvc.yaml does not list them as dependencies"


def _lazy_names(path: Path) -> set[str] | None:
    """The names of a PEP 562 lazy table (``_LAZY = {name: module}`` with ``__getattr__``) when that
    and literals are all a package __init__ holds, else None."""
    names: set[str] = set()
    for n in ast.parse(path.read_text()).body:
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant):
            continue
        if isinstance(n, (ast.Import, ast.ImportFrom)) and all(
                (getattr(n, "module", None) or a.name) in ("__future__", "typing", "importlib") for a in n.names):
            continue
        if isinstance(n, ast.FunctionDef) and n.name in ("__getattr__", "__dir__"):
            continue
        if isinstance(n, ast.Assign):
            value = ast.literal_eval(n.value)   # raises on anything but a literal: then not lazy-only
            if isinstance(value, dict) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in n.targets):
                names |= set(value)
            continue
        return None
    return names


def _docstring_only(path: Path) -> bool:
    """A package __init__ that runs no code at import (a docstring, or a lazy table no stage looks up:
    see the test below) need not be listed."""
    if path.name != "__init__.py":
        return False
    try:
        return _lazy_names(path) is not None
    except ValueError:
        return False


def test_no_library_module_looks_up_a_lazy_name_of_the_package():
    """bcos_lib/__init__.py offers create_model, prepare_input, … lazily (PEP 562) to users; the
    library's own modules import them from their defining modules, so no stage's result depends on
    the package's __init__ and dvc.yaml may leave it out."""
    lazy = _lazy_names(ROOT / "bcos_lib" / "__init__.py")
    assert lazy and "create_model" in lazy
    offenders = []
    for f in sorted((ROOT / "bcos_lib").rglob("*.py")):
        depth = len(f.relative_to(ROOT / "bcos_lib").parts) - 1   # how many `..` lead to the package
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                to_package = (node.module == "bcos_lib" and node.level == 0) or (
                    node.module is None and node.level == depth + 1)
                if to_package and {a.name for a in node.names} & lazy:
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "bcos_lib" and node.attr in lazy):
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_the_library_version_is_the_packages():
    import bcos_lib
    from bcos_lib.core.utils import versions
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert bcos_lib.__version__ == version == versions()["bcos_lib"]


def test_a_model_stage_lists_no_other_papers_code():
    """Exactness the other way round: the train stage of a CoDA net lists no file of another paper's
    package, and no presentation code (figures, report) at all."""
    stages = dict(STAGES)
    deps = stages["train-coda_net"]["deps"]
    others = [d for d in deps if d.startswith("bcos_lib/methods/") and not d.startswith("bcos_lib/methods/coda")]
    assert not others, others
    assert not [d for d in deps if d.endswith(("figures.py", "report.py", "present.py"))], deps
    assert not [d for d in stages["evaluate-coda_net"]["deps"] if d.endswith(("figures.py", "present.py"))]


def test_every_model_has_its_stages_settings_and_start():
    from bcos_lib.core.config import load_params
    params = load_params()
    stages = dict(STAGES)
    for key, entry in params.models.items():
        # a seed replica shares the train and evaluate stage of the model it replicates (one start-up,
        # and an edit to that model's params reruns every seed anyway)
        stage_key = entry.replica_of or key
        train, evaluate = stages[f"train-{stage_key}"], stages[f"evaluate-{stage_key}"]
        assert f"results/settings/train/{key}.json" in train["deps"]
        assert f"results/settings/evaluate/{key}.json" in evaluate["deps"]
        assert f"models/{key}.pt" in evaluate["deps"]
        assert {f"models/{key}.pt": {"persist": True}} in train["outs"]
        assert {f"results/evaluate/{key}/metrics.json": {"cache": False, "persist": True}} in evaluate["outs"]
        assert key in train["cmd"].split("-p models ")[1].split(",")
        # a seed replica is trained and evaluated for the claims ledger, not explained or drawn
        assert (f"models/{key}.pt" in stages["explain"]["deps"]) == (not entry.replica_of)
        start = f"models/{entry.init_from}.pt" if entry.init_from else "results/data/summary.json"
        assert start in train["deps"]
    assert [n for n, _ in STAGES if n.startswith("train-")] == [f"train-{k}" for k, e in params.models.items()
                                                                  if not e.replica_of]
    assert any(e.replica_of for e in params.models.values())   # the default profile has seed replicas


def test_the_claims_stage_reads_the_results_and_only_the_claims_code():
    claims = dict(STAGES)["claims"]
    assert {"results/train", "results/evaluate", "results/settings/claims.json"} <= set(claims["deps"])
    code = [d for d in claims["deps"] if d.startswith("bcos_lib/")]
    assert not any(d.endswith(("present.py", "figures.py", "metrics.py", "model.py")) for d in code), code
    assert "results/claims.md" in dict(STAGES)["readme"]["deps"]


def test_dvc_yaml_is_what_the_generator_writes():
    from bcos_lib.dvcgen import render
    assert (ROOT / "dvc.yaml").read_text() == render(ROOT), \
        "dvc.yaml is out of date: run `python -m bcos_lib.dvcgen` (make dvc.yaml)"


def test_the_scanner_sees_function_level_and_relative_imports():
    """The checker itself: a module imported only inside a function is found (so the test can fail)."""
    found = closure({"bcos_lib.stages.evaluate"})
    assert PKG / "core" / "config.py" in found   # imported inside the pipeline's set-up
    assert PKG / "stages" / "__init__.py" in found
    assert PKG / "methods" / "bcos" / "model.py" not in found  # a method's side is imported by name


def _metric_files() -> dict[str, Path]:
    """metric name → the file that registers it, read from the sources (not the registry)."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        for name in re.findall(r'register_metric\(\s*Metric\(\s*"([^"]+)"', f.read_text()):
            out[name] = f
    return out


def _profile_views():
    from bcos_lib.core.config import load_params
    return [load_params(None, name) for name in _profiles()]


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_stage_lists_the_files_of_the_metrics_it_runs(stage):
    """The CSG metrics on an ungated twin, dissection on the ReLU twin, the margin study's per-epoch
    localisation on a B-cos CNN: the file that registers the metric is code the stage runs, in every
    profile."""
    from bcos_lib.core.registry import method_of
    files = _metric_files()
    assert {"mis", "dissection", "tracked_localisation", "fixed_grid_localisation"} <= set(files)
    stages = dict(STAGES)
    foreign = 0
    for params in _profile_views():
        for key, entry in params.models.items():
            deps = stages[f"{stage}-{entry.replica_of or key}"]["deps"]   # (a replica: its model's stage)
            names = (params.train_config(key).epoch_metrics if stage == "train"
                     else params.evaluate_config(key).metrics)
            own = ROOT.joinpath(*method_of(entry.arch).package.split("."))
            for name in names:
                foreign += own not in files[name].parents
                assert _covered(files[name], deps), \
                    f"{stage}-{key} runs the metric {name!r} of {files[name]} but does not depend on it"
    assert foreign, "no model runs another method's metric: the test checks nothing"


def _cached_outputs() -> list[str]:
    """Every output DVC keeps in its cache (not ``cache: false``), foreach items expanded."""
    out = []
    for name, stage in STAGES:
        for o in stage.get("outs", []):
            path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
            if opts.get("cache", True):
                out.append(path)
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


def test_stages_depend_on_their_resolved_settings_not_on_sections_of_params_yaml():
    """Only the settings stage reads params.yaml; every other stage lists the file of settings it runs
    with (an edit of another profile, or of a value a model overrides, then reruns nothing)."""
    for name, st in STAGES:
        assert "params" not in st, name
        if name == "settings":
            assert "params.yaml" in st["deps"]
        elif name != "readme":
            assert "params.yaml" not in st["deps"], name
            assert any(d.startswith("results/settings/") for d in st["deps"]), name


def test_an_entry_for_the_default_profile_is_merged(tmp_path):
    from bcos_lib.core.config import load_params
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


def test_plots_compare_the_models_of_each_group_instead_of_one_plot_per_model():
    from bcos_lib.core.config import load_params
    params = load_params()
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert not [n for n, st in dvc["stages"].items() if "plots" in st], "a per-model plot is back"
    plots = {next(iter(p)): next(iter(p.values())) for p in dvc["plots"]}
    groups = {e.group or "main" for e in params.models.values()}
    assert {f"accuracy_{g}" for g in groups} <= set(plots)
    main = [k for k, e in params.models.items() if not e.group]
    assert list(plots["accuracy_main"]["y"]) == [f"results/train/{k}/history.csv" for k in main]
    # the groups whose models score a localisation after every epoch get that curve too
    assert plots["localisation_margin"]["y"]["results/train/margin_bcos/history.csv"][0] == "tracked_localisation_own"
    assert "tracked_localisation_own" not in plots["localisation_margin"]["y"]["results/train/margin_std/history.csv"]
    assert plots["localisation_bcosification"]["y"] == {f"results/train/{k}/history.csv": ["fixed_grid_localisation_mean"]
                                                       for k, e in params.models.items() if e.group == "bcosification"}
