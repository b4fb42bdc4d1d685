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
