"""The library's structure: no import circle, shared modules that name no paper, names declared
in one place agreeing with what implements them, and the registries importing a method's code
only when asked for it."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bcos_lib"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """module → the bcos_lib modules it imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                out |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in out if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_shared_modules_name_no_paper_and_no_model():
    """Outside bcos_lib/methods/, the code names no method package and no model key of params.yaml
    (docstrings and comments may cite the papers).  The pipeline's own modules that iterate over
    the registries (dvcgen, settings, stages) are held to the same rule."""
    keys = set(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])
    packages = {p.name for p in (PKG / "methods").iterdir() if (p / "__init__.py").is_file()}
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "methods" or path.name in ("book.py", "browser.py", "smoke.py", "toy.py",
                                                       "trained.py", "tutorial_figures.py"):
            continue   # the methods themselves; tools for the book, the tutorials and the smoke run
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                named = {w for w in keys if w == node.value} | {p for p in packages if f"methods.{p}" in node.value}
                if named:
                    offenders.append(f"{rel}:{node.lineno}: {sorted(named)}")
            if isinstance(node, ast.ImportFrom) and node.module and ".methods." in f".{node.module}.":
                offenders.append(f"{rel}:{node.lineno}: imports {node.module}")
    assert not offenders, offenders


def test_names_declared_for_the_checks_match_what_implements_them():
    """params.yaml is checked against names the registry declares without importing the code that
    implements them (the losses, the attributions, the shared metrics): they must agree."""
    from bcos_lib.core import registry
    from bcos_lib.core.config import LOSS_NAMES
    from bcos_lib.explain import list_attributions
    from bcos_lib.train import LOSSES

    assert tuple(LOSSES) == LOSS_NAMES
    assert tuple(list_attributions()) == registry.ATTRIBUTIONS
    for name, module in registry.SHARED_METRICS.items():
        assert registry.get_metric(name).module == module, name


def test_building_a_model_imports_its_method_and_no_other():
    """What the train stage of a CoDA net imports: the CoDA package's model side, no other paper's
    code, no plotting.  Run in a fresh interpreter, so that nothing else is loaded yet."""
    code = (
        "import sys\n"
        "from bcos_lib.core import pipeline\n"
        "from bcos_lib.core.config import load_params\n"
        "p = load_params(None, None, ['coda_net'])\n"
        "from bcos_lib.core.registry import create_model\n"
        "create_model(p.model('coda_net').arch, **p.model('coda_net').kwargs)\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('bcos_lib'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    methods = {m.split(".")[2] for m in out if m.startswith("bcos_lib.methods.") and m.count(".") >= 3}
    assert methods == {"coda"}, out
    assert "bcos_lib.methods.coda.model" in out and "bcos_lib.methods.coda.present" not in out
    assert not [m for m in out if m in ("bcos_lib.figures", "bcos_lib.report", "bcos_lib.explain")], out
