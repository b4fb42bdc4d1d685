"""`make bench`: the price of interpretability, as ratios measured side by side in one process.

Every row compares an interpretable computation A with its plain counterpart B on the same
inputs, with the same threads: the two are run alternately (A B, B A, A B, …, so that a
burst of load from other programs falls on both), ``--repeats`` times, and each repetition
gives one ratio A ÷ B of this process's CPU time (steadier than wall time on a shared
machine; wall-time ratios are recorded too).  The table shows the median ratio and the
spread (the smallest and largest of the repetitions' ratios).  Rows:

* layers, forward + backward: B-cos conv (MaxOut 1, 2) ÷ ``nn.Conv2d`` over the conv layers of
  the pipeline's B-cos CNN (params.yaml ``models.bcos_cnn``, the training batch size) and at
  batch 64, 64→64 channels, 32×32, 3×3 (B-cos v2 §3; the floors are ≈ 1 and ≈ 2: a MaxOut-2
  unit is two convolutions); the other interpretable layer families found in
  the method packages' layers at run time (DAU ÷ conv, LWTA ÷ ReLU, the class-specific gate's
  overhead), or "not present";
* training throughput (images/s, forward + backward + optimiser step) of each interpretable
  model of params.yaml ÷ its plain twin (``models.<key>.twin`` in params.yaml; the CSG models with their gates closed),
  and of the B-cos CNN and the standard CNN with the hardware options (channels_last, bf16
  autocast) ÷ without;
* data loading: a training step that takes its batch as ``fit`` does ÷ one on a loaded batch;
* explanations: ``explain`` on a batch ÷ a loop over its images (the ratio is loop time ÷
  batched time, a speed-up), and the grid pointing game batched ÷ a per-class loop
  (``scripts/bench_evaluate.py``);
* compiled (``torch.compile``, not with ``--quick``): the B-cos conv and each interpretable model's
  training step compiled ÷ its twin compiled, and compiled ÷ eager, with each first call's
  compile time (10–60 s per module on 2 cores; ``--only compiled``, ``--models``);
* test-set passes (``--only test_pass``): scoring the test images in batches of 1 000 ÷ in the
  model's ``train.eval_batch_size`` of params.yaml (a speed-up), and a DAU layer's squared norm
  ‖w(x)‖² as one einsum over an (N, O·(r+1)) intermediate ÷ the layer's packed form
  (``DynamicAlignmentConv2d._sq_norm``), forward only and forward + backward;
* start-up: a stage's runner from its start to the notebook's first line of work and from the
  last to its end, with the notebook run by a warm stage server, in the runner's own process and in a
  kernel (``--only startup``).

    python scripts/bench.py              # the full table (≈ 15 minutes on 2 idle cores, most of it compiling), results/bench.json
    python scripts/bench.py --quick      # small shapes, 3 repetitions: that it runs (CI)
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bcos_lib import create_model, prepare_input
from bcos_lib.methods.bcos import layers as L
from bcos_lib.explain import explain
from bcos_lib.core.utils import keep_freed_memory


@dataclass
class Row:
    group: str
    name: str
    ratio: float | None = None          # median of the repetitions' CPU-time ratios
    low: float | None = None
    high: float | None = None
    wall_ratio: float | None = None     # median wall-time ratio
    target: str = ""
    met: bool | None = None
    note: str = ""
    detail: dict = field(default_factory=dict)


def timed(fn: Callable[[], object], inner: int) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.process_time() - c0) / inner, (time.perf_counter() - w0) / inner


def compare(a: Callable[[], object], b: Callable[[], object], repeats: int, inner: int) -> dict:
    """Interleaved timing of a and b; per repetition the ratio a ÷ b (CPU and wall time)."""
    a(), b()  # warm-up: allocator, kernels, autograd graphs
    cpu, wall, ta, tb = [], [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            ca, wa = timed(a, inner)
            cb, wb = timed(b, inner)
        else:
            cb, wb = timed(b, inner)
            ca, wa = timed(a, inner)
        cpu.append(ca / cb)
        wall.append(wa / wb)
        ta.append(ca)
        tb.append(cb)
    return {"ratio": statistics.median(cpu), "low": min(cpu), "high": max(cpu), "wall_ratio": statistics.median(wall),
            "a_cpu_s": statistics.median(ta), "b_cpu_s": statistics.median(tb)}


def fwd_bwd(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    x = x.clone().requires_grad_(True)

    def run() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()
    return run


def stack(modules: list[nn.Module], inputs: list[torch.Tensor]) -> Callable[[], None]:
    runs = [fwd_bwd(m, x) for m, x in zip(modules, inputs)]

    def run() -> None:
        for r in runs:
            r()
    return run


def pipeline_conv_shapes(entry_kwargs: dict, batch: int) -> list[tuple[int, int, int, int, int, int]]:
    """(N, C_in, H, W, C_out, stride) of every B-cos conv of the pipeline's B-cos CNN (forward hooks)."""
    model = create_model("bcos_cnn", **entry_kwargs).eval()
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(
        (batch, i[0].shape[1], i[0].shape[2], i[0].shape[3], m.out_channels, m.stride if isinstance(m.stride, int)
         else m.stride[0]))) for m in model.modules() if isinstance(m, L.BcosConv2d) and m.kernel_size not in (1, (1, 1))]
    with torch.no_grad():
        model(prepare_input(model, torch.rand(1, model.image_channels, 28, 28)))
    for h in hooks:
        h.remove()
    return shapes


def conv_rows(shapes_name: str, shapes: list[tuple], repeats: int, inner: int) -> list[Row]:
    rows = []
    xs = [torch.rand(n, c, h, w) for n, c, h, w, _, _ in shapes]
    plain = [nn.Conv2d(c, o, 3, stride=s, padding=1, bias=False) for _, c, _, _, o, s in shapes]
    for max_out, target in ((1, 1.15), (2, 2.2)):
        bcos = [L.BcosConv2d(c, o, 3, stride=s, padding=1, b=2.0, max_out=max_out) for _, c, _, _, o, s in shapes]
        m = compare(stack(bcos, xs), stack(plain, xs), repeats, inner)
        rows.append(Row("layers", f"B-cos conv MaxOut {max_out} ÷ nn.Conv2d, {shapes_name}",
                        m["ratio"], m["low"], m["high"], m["wall_ratio"], f"≤ {target}", m["ratio"] <= target,
                        detail=m))
    return rows


def layer_family_rows(repeats: int, inner: int, quick: bool) -> list[Row]:
    """The other interpretable layer families, discovered by name in the method packages' layers."""
    rows = []
    n, c, hw = (8, 16, 16) if quick else (64, 64, 32)
    x = torch.rand(n, c, hw, hw)
    families = {"DAU": ("dynamicalignmentconv", "Dynamic alignment unit (CoDA Nets) ÷ nn.Conv2d"),
                "LWTA": ("lwta", "LWTA ÷ ReLU"), "Gate": ("classspecificgate", "class-specific gate overhead")}
    import importlib

    from bcos_lib.core.registry import list_methods
    mods = [importlib.import_module(f"{m.package}.layers") for m in list_methods() if m.side("layers") is not None]
    exported = {name: getattr(mod, name) for mod in mods for name in dir(mod) if inspect.isclass(getattr(mod, name))
                and issubclass(getattr(mod, name), nn.Module)}
    for family, (key, title) in families.items():
        found = [cls for name, cls in exported.items() if key in name.lower()]
        if not found:
            rows.append(Row("layers", title, note=f"not present (no {family} layer in a method package)"))
            continue
        cls = found[0]
        try:
            if family == "DAU":   # the pipeline's rank (coda_net's entries: 8)
                a, b = cls(c, c, 3, padding=1, rank=8), nn.Conv2d(c, c, 3, padding=1)
            elif family == "LWTA":  # U = 8 as the pipeline's LWTA CNN
                a, b = cls(competitors=8), nn.ReLU()
            else:                  # an open gate (standard steps and test time): its cost over none
                a, b = cls(c, 10), nn.Identity()
            m = compare(fwd_bwd(a, x), fwd_bwd(b, x), repeats, inner)
            rows.append(Row("layers", f"{title} ({cls.__name__})", m["ratio"], m["low"], m["high"], m["wall_ratio"],
                            detail=m))
        except Exception as e:  # noqa: BLE001 - a layer whose constructor differs: say so, do not guess
            rows.append(Row("layers", f"{title} ({cls.__name__})",
                            note=f"present but not measured: {type(e).__name__}: {e}"))
    return rows


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool = False,
               bf16: bool = False, gated: bool = False,
               batches: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> Callable[[], None]:
    """One optimiser step of ``model`` (its pipeline loss) per call.  ``gated``: the step of a
    class-specific-gate model with its gates closed on the labels (a CSG step; standard steps
    leave them open).  ``batches``: each call first takes its batch from it (the data loading
    is then part of the measured step) instead of reusing ``x``, ``y``."""
    from contextlib import nullcontext

    from bcos_lib.methods.csg.layers import gate_labels
    from bcos_lib.train import loss_fn
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loss_name = getattr(model, "default_loss", "ce")

    def inputs(images: torch.Tensor) -> torch.Tensor:
        inp = prepare_input(model, images)
        return inp.contiguous(memory_format=torch.channels_last) if channels_last else inp

    fixed = inputs(x)

    def run() -> None:
        if batches is None:
            inp, labels = fixed, y
        else:
            images, labels = batches()
            inp = inputs(images)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                (gate_labels(model, labels) if gated else nullcontext()):
            out = model(inp)
        loss = loss_fn(loss_name, out.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


#: each interpretable model of the pipeline and the model it is compared with: the standard model
#: of the same shape and training (its twin in params.yaml where it has one, else std_cnn); the
#: CSG models step with their gates closed (a CSG step) against their ungated twin.  Models of
#: params.yaml not named here are compared with std_cnn, one per architecture.


def _build(params, key: str, quick: bool) -> nn.Module:
    """The model of ``models.<key>`` with random weights.  An entry with ``init_from`` is made as
    the train stage makes it (``stages.train.initial_model``): its method's ``init`` applied to the
    model it starts from (e.g. B-cosification of ``std_cnn``), here an untrained one."""
    from bcos_lib.core.registry import method_of
    from bcos_lib.core.config import method_options
    e = params.model(key)
    kw = dict(e.kwargs)
    if quick and "channels" in kw:
        kw["channels"], kw["strides"] = [8, 8, 16], [1, 2, 2]
    method = method_of(e.arch)
    if e.init_from and method.init is not None:
        return method.init(_build(params, e.init_from, quick), method_options(e, key))
    return create_model(e.arch, **kw)


def model_pairs(params) -> dict[str, str]:
    """Each interpretable model of params.yaml → the model it is timed against: its ``twin``, else
    (a model a later method adds) ``std_cnn``, one model per architecture.  Seed replicas are left
    out: they time the same thing as the model they replicate."""
    from bcos_lib.core.registry import method_of
    standard = method_of("std_cnn").name
    models = {k: e for k, e in params.models.items() if not e.replica_of}
    pairs = {k: e.twin for k, e in models.items() if e.twin}
    covered = {params.model(k).arch for k in pairs}
    for key, e in models.items():
        if method_of(e.arch).name != standard and e.arch not in covered and "std_cnn" in params.models:
            pairs[key] = "std_cnn"
            covered.add(e.arch)
    return pairs


def training_rows(repeats: int, inner: int, quick: bool) -> list[Row]:
    from bcos_lib.core.config import load_params
    params = load_params()
    pairs = model_pairs(params)
    rows = []
    for key, twin_key in pairs.items():
        if quick and key != "bcos_cnn":  # CI's quick table: the B-cos CNN's row stands for the others
            continue
        batch = 32 if quick else params.train_config(key).batch_size
        x, y = torch.rand(batch, 1, 28, 28), torch.arange(batch) % 10
        gated = params.model(key).arch.startswith("csg_")
        torch.manual_seed(0)
        try:   # each model in the memory layout the pipeline trains it in (train.channels_last)
            a = train_step(_build(params, key, quick), x, y, gated=gated,
                           channels_last=params.train_config(key).channels_last)
            b = train_step(_build(params, twin_key, quick), x, y,
                           channels_last=params.train_config(twin_key).channels_last)
        except (ValueError, TypeError, RuntimeError) as err:
            rows.append(Row("training", f"{key} ÷ {twin_key}", note=f"present but not timed here: {err}"))
            continue
        m = compare(b, a, repeats, inner)   # throughput ratio = time(twin) ÷ time(interpretable)
        target = 0.7 if key == "bcos_cnn" else None
        what = f"{key} (CSG steps) ÷ {twin_key}" if gated else f"{key} ÷ {twin_key}"
        rows.append(Row("training", f"training images/s: {what} (batch {batch})", m["ratio"], m["low"],
                        m["high"], m["wall_ratio"], f"≥ {target}" if target else "",
                        None if target is None else m["ratio"] >= target, detail=m))
        if key == "bcos_cnn":
            for model_key in (key, twin_key):
                for what, opts in (("channels_last", {"channels_last": True}), ("bf16 autocast", {"bf16": True})):
                    torch.manual_seed(0)
                    on = train_step(_build(params, model_key, quick), x, y, **opts)
                    off = train_step(_build(params, model_key, quick), x, y)   # NCHW, fp32
                    m = compare(off, on, repeats, inner)
                    rows.append(Row("hardware", f"training images/s: {model_key} with {what} ÷ without", m["ratio"],
                                    m["low"], m["high"], m["wall_ratio"], detail=m))
    return rows


def loading_rows(repeats: int, inner: int, quick: bool, data: Path) -> list[Row]:
    """Is loading the data a bottleneck?  The training step of the pipeline's fastest model
    (std_cnn) taking its batches as ``fit`` does (``bcos_lib.train.batches``: shuffled indices
    into the in-memory training set, then the model's input encoding) ÷ the same step on one
    batch loaded beforehand."""
    import itertools

    from bcos_lib.core.config import load_params
    from bcos_lib.core.data import DataError, load_dataset
    from bcos_lib.train import batches
    params = load_params()
    batch = 32 if quick else params.train.batch_size
    try:
        ds = load_dataset("fashion_mnist", data, "train")
    except (DataError, OSError) as err:
        return [Row("loading", "data loading: std_cnn step with batches() ÷ on a loaded batch",
                    note=f"present but not timed here: no Fashion-MNIST under {data} ({type(err).__name__})")]
    stream = itertools.chain.from_iterable(batches(ds, batch, shuffle=True, seed=0, epoch=e) for e in itertools.count())
    x, y = ds.images[:batch], ds.labels[:batch]
    torch.manual_seed(0)
    loading = train_step(_build(params, "std_cnn", quick), x, y, batches=lambda: next(stream))
    loaded = train_step(_build(params, "std_cnn", quick), x, y)
    m = compare(loading, loaded, repeats, inner)
    return [Row("loading", f"data loading: std_cnn step with batches() from {len(ds)} images ÷ on a loaded batch "
                f"(batch {batch})", m["ratio"], m["low"], m["high"], m["wall_ratio"], "≈ 1", detail=m)]


def explanation_rows(repeats: int, inner: int, quick: bool, data: Path) -> list[Row]:
    from bcos_lib.core.config import load_params
    entry = load_params().model("bcos_cnn")
    kw = dict(entry.kwargs)
    if quick:
        kw["channels"], kw["strides"] = [8, 8, 16], [1, 2, 2]
    torch.manual_seed(0)
    model = create_model("bcos_cnn", **kw).eval()
    n = 8 if quick else 32
    x = prepare_input(model, torch.rand(n, 1, 28, 28))
    m = compare(lambda: [explain(model, x[i:i + 1], colour=False) for i in range(n)],
                lambda: explain(model, x, colour=False), repeats, inner)
    rows = [Row("explanations", f"explanation speed-up: one-image loop ÷ batched explain ({n} images)", m["ratio"],
                m["low"], m["high"], m["wall_ratio"], "≥ 1", m["ratio"] >= 1, detail=m)]
    spec = importlib.util.spec_from_file_location("bench_evaluate", ROOT / "scripts" / "bench_evaluate.py")
    be = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(be)
    from bcos_lib.metrics import make_grids
    ds = be.load_test_images(data, 1000)
    pool = {c: torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)}
    g = 2 if quick else 3
    n_grids = 2 if quick else 4
    grids, classes = make_grids(ds, pool, g, n_grids, seed=0)
    m = compare(lambda: be.loop_scores(model, grids, classes, g),
                lambda: be.batched_scores(model, grids, classes, g, n_grids), repeats, inner)
    diff = float((be.loop_scores(model, grids, classes, g) - be.batched_scores(model, grids, classes, g, n_grids))
                 .abs().max())
    rows.append(Row("explanations", f"grid evaluation speed-up: per-class loop ÷ batched ({n_grids} {g}×{g} grids)",
                    m["ratio"], m["low"], m["high"], m["wall_ratio"], "≥ 1", m["ratio"] >= 1,
                    note=f"largest score difference {diff:.1e}", detail=m))
    return rows


def _compiled(module: nn.Module) -> nn.Module:
    from bcos_lib.train import compiled
    return compiled(module)


def _first_call_seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compiled_rows(repeats: int, inner: int, quick: bool, shapes: dict[str, tuple[list[tuple], tuple[float, float]]],
                  only: list[str] | None = None) -> list[Row]:
    """``torch.compile`` (TorchInductor) rows: each B-cos conv shape and each interpretable model's
    training step compiled ÷ its plain twin compiled (each at its own best setting), and each model
    compiled ÷ eager; the compile and warm-up time of the first call is recorded per row (the
    kernel cache, ``.cache/inductor``, is used: a cached kernel loads instead of compiling)."""
    from bcos_lib.train import compile_unavailable
    why = compile_unavailable()
    if why:
        return [Row("compiled", "torch.compile rows", note=f"not measured: {why}")]
    rows = []
    for shapes_name, (shape_list, targets) in shapes.items():
        xs = [torch.rand(n, c, h, w) for n, c, h, w, _, _ in shape_list]
        plain = [_compiled(nn.Conv2d(c, o, 3, stride=s, padding=1, bias=False)) for _, c, _, _, o, s in shape_list]
        b = stack(plain, xs)
        first_b = _first_call_seconds(b)
        for max_out, target in zip((1, 2), targets):
            bcos = [_compiled(L.BcosConv2d(c, o, 3, stride=s, padding=1, b=2.0, max_out=max_out))
                    for _, c, _, _, o, s in shape_list]
            a = stack(bcos, xs)
            first_a = _first_call_seconds(a)
            m = compare(a, b, repeats, inner)
            m.update(first_call_s=first_a, twin_first_call_s=first_b)
            rows.append(Row("compiled", f"compiled B-cos conv MaxOut {max_out} ÷ compiled nn.Conv2d, {shapes_name}",
                            m["ratio"], m["low"], m["high"], m["wall_ratio"], f"≤ {target}", m["ratio"] <= target,
                            note=f"first call (compile) {first_a:.0f} s", detail=m))
    from bcos_lib.core.config import load_params
    params = load_params()
    targets = {"bcos_cnn": 0.7, "coda_net": 0.4, "lwta_cnn": 0.8}
    for key, twin_key in model_pairs(params).items():
        if (quick and key != "bcos_cnn") or (only and key not in only):
            continue
        batch = 32 if quick else params.train_config(key).batch_size
        x, y = torch.rand(batch, 1, 28, 28), torch.arange(batch) % 10
        gated = params.model(key).arch.startswith("csg_")
        try:
            torch.manual_seed(0)
            a_eager = train_step(_build(params, key, quick), x, y, gated=gated)
            a = train_step(_compiled(_build(params, key, quick)), x, y, gated=gated)
            b = train_step(_compiled(_build(params, twin_key, quick)), x, y)
            first_a, first_b = _first_call_seconds(a), _first_call_seconds(b)
        except Exception as err:  # noqa: BLE001 - a model Dynamo cannot compile: say so
            rows.append(Row("compiled", f"compiled {key} ÷ compiled {twin_key}",
                            note=f"not compiled here: {type(err).__name__}: {str(err).splitlines()[0][:200]}"))
            continue
        target = targets.get(key)
        what = f"{key} (CSG steps)" if gated else key
        m = compare(b, a, repeats, inner)
        m.update(first_call_s=first_a, twin_first_call_s=first_b)
        rows.append(Row("compiled", f"training images/s: compiled {what} ÷ compiled {twin_key} (batch {batch})",
                        m["ratio"], m["low"], m["high"], m["wall_ratio"], f"≥ {target}" if target else "",
                        None if target is None else m["ratio"] >= target,
                        note=f"first calls (compile) {first_a:.0f} s and {first_b:.0f} s", detail=m))
        m = compare(a_eager, a, repeats, inner)
        m.update(first_call_s=first_a)
        rows.append(Row("compiled", f"training images/s: {what} compiled ÷ eager (batch {batch})",
                        m["ratio"], m["low"], m["high"], m["wall_ratio"], detail=m))
    return rows


def startup_rows(runs_per_engine: int = 3) -> list[Row]:
    """A pipeline stage's start-up: ``python -m bcos_lib.runner`` on a notebook of the evaluate
    stage's first cells (params check, imports) that ends at the stage's first line of work — from
    the command's start to that line, and from it to the process's end (the notebook written) —
    with the notebook run by a warm stage server (the default, :mod:`bcos_lib.forkserver`), in the
    runner's own process (``BCOS_RUNNER_SERVER=0``) and in a Jupyter kernel.  DVC's own work per
    stage (hashing, ``dvc.lock``) comes on top."""
    import json as _json
    import subprocess
    import tempfile
    nb = _json.loads((ROOT / "notebooks" / "40_evaluate.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"][:2]
    probe = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
             "source": "import time\nfrom bcos_lib.stages import evaluate\nprint('FIRST-WORK', time.time())"}
    nb["cells"] = [*code, probe]
    import os
    rows = []
    from bcos_lib import forkserver
    for engine in ("stage server", "own process", "Jupyter kernel"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BCOS_RUNNER_KERNEL", "BCOS_RUNNER_SERVER"))}
        if engine == "Jupyter kernel":
            env["BCOS_RUNNER_KERNEL"] = "1"
        if engine == "own process":
            env["BCOS_RUNNER_SERVER"] = "0"
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "probe.ipynb", Path(tmp) / "probe_out.ipynb"
            src.write_text(_json.dumps(nb))
            command = [sys.executable, "-m", "bcos_lib.runner", str(src), str(out), "-p", "profile",
                       "tiny", "-p", "output_dir", str(Path(tmp) / "run"), "-p", "models", "std_cnn"]
            server = forkserver.start(ROOT, env) if engine == "stage server" else None   # warm, as from the 2nd stage on
            for _ in range(runs_per_engine):
                t0 = time.time()
                proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
                t1 = time.time()
                marks = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("FIRST-WORK")]
                if proc.returncode or not marks:
                    rows.append(Row("startup", f"stage start-up ({engine})", note=f"not measured: runner exit "
                                    f"{proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"))
                    break
                runs.append((marks[0] - t0, t1 - marks[0]))
            if server:
                forkserver.stop(server)
        if not runs:
            continue
        start = statistics.median(r[0] for r in runs)
        end = statistics.median(r[1] for r in runs)
        rows.append(Row("startup", f"stage start-up ({engine}), seconds: {start:.1f} to the first line of "
                        f"work, {end:.1f} from the last to the end", note=f"median of {len(runs)} runs",
                        detail={"start_s": start, "end_s": end, "runs": runs}))
    return rows


def test_pass_rows(repeats: int, quick: bool) -> list[Row]:
    """The test-set pass of the train stage (and of the evaluate stage's confident pool): the
    models scored in batches of 1 000 ÷ in their ``eval_batch_size``; and the DAU's squared norm."""
    from bcos_lib.core.config import load_params
    from bcos_lib.methods.coda.layers import DynamicAlignmentConv2d
    params = load_params()
    n = 64 if quick else 2000
    rows = []
    for key in ("std_cnn", "bcos_cnn", "bcos_cnn_scratch", "lwta_cnn", "coda_net"):
        if key not in params.models:
            continue
        model = _build(params, key, False).eval()   # the pipeline's shapes (quick: fewer images)
        x = prepare_input(model, torch.rand(n, 1, 28, 28))
        mine = params.train_config(key).eval_batch_size

        def scored(batch: int, model=model, x=x) -> Callable[[], None]:
            def run() -> None:
                with torch.inference_mode():
                    for i in range(0, len(x), batch):
                        model(x[i:i + batch])
            return run
        m = compare(scored(1000), scored(mine), repeats, 1)
        rows.append(Row("test_pass", f"test images/s: {key} in batches of {mine} ÷ of 1 000 ({n} images)", m["ratio"],
                        m["low"], m["high"], m["wall_ratio"], detail=m))
    layer = DynamicAlignmentConv2d(16, 32, 3, rank=8) if not quick else DynamicAlignmentConv2d(4, 8, 3, rank=2)
    x = torch.rand(64, layer.in_channels, 14, 14)

    def einsum_norm(u1: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        gram = stacked.flatten(1).view(layer.out_channels, layer.rank + 1, -1)
        gram = gram @ gram.transpose(1, 2)
        return torch.einsum("nihw,oij,njhw->nohw", u1, gram, u1).clamp_min(0)

    def norms(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], backward: bool) -> Callable[[], None]:
        def run() -> None:
            layer.zero_grad(set_to_none=True)
            u = torch.nn.functional.conv2d(x, layer.a_weight, None, layer.stride, layer.padding)
            u1 = torch.cat([u, torch.ones_like(u[:, :1])], 1)
            out = fn(u1, layer._stacked())
            if backward:
                out.sum().backward()
        return run
    packed = lambda u1, stacked: layer._sq_norm(stacked, u1)   # noqa: E731
    for backward in (False, True):
        with torch.set_grad_enabled(backward):
            m = compare(norms(einsum_norm, backward), norms(packed, backward), repeats, 3)
        rows.append(Row("test_pass", f"DAU ‖w(x)‖², {'forward + backward' if backward else 'forward'}: einsum ÷ "
                        f"packed (batch {len(x)}, {layer.in_channels}→{layer.out_channels}, {x.shape[-2]}×{x.shape[-1]}, "
                        f"rank {layer.rank})", m["ratio"], m["low"], m["high"], m["wall_ratio"], detail=m))
    return rows


def _step_worker(key: str, threads: int, steps: int, quick: bool) -> None:
    """(A process of :func:`side_by_side_rows`.) ``steps`` training steps of ``models.<key>`` on
    ``threads`` threads after 3 warm-up steps; prints the steps per second of wall time."""
    torch.set_num_threads(threads)
    from bcos_lib.core.config import load_params
    params = load_params()
    torch.manual_seed(0)
    model = _build(params, key, quick)
    batch = 8 if quick else params.train_config(key).batch_size
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    step = train_step(model, x, y, channels_last=params.train_config(key).channels_last)
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    print(steps / (time.perf_counter() - t))


def side_by_side_rows(repeats: int, quick: bool) -> list[Row]:
    """Training images per second of several one-thread processes at once (each a training of the
    same model, as a model's seed replicas are run by ``bcos_lib.core.members``) ÷ one process with
    every core's thread (torch's default), for the models with seed replicas in the pipeline:
    the throughput that running the replicas side by side gains."""
    import subprocess
    cores = os.cpu_count() or 1
    steps = 3 if quick else 20
    rows = []
    for key in ("std_cnn",) if quick else ("std_cnn", "bcos_cnn", "lwta_cnn"):
        def rate(procs: int, threads: int) -> float:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step-worker", key, str(threads), str(steps)]
            if quick:
                cmd.append("--quick")
            ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(procs)]
            return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in ps)
        for procs in (2,) if quick else (2, 3):
            ratios = []
            for _ in range(repeats):
                one = rate(1, cores)
                ratios.append(rate(procs, 1) / one)
            ratios.sort()
            rows.append(Row("side by side", f"side by side: training images/s of {procs} one-thread processes of "
                            f"{key} at once ÷ one process with {cores} threads", statistics.median(ratios), ratios[0],
                            ratios[-1], statistics.median(ratios), note="wall time (a parallel speed-up)",
                            detail={"ratios": ratios, "steps": steps}))
    return rows


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def table(rows: list[Row]) -> str:
    lines = ["| measurement | ratio (median CPU time) | spread (min–max) | wall-time ratio | target | met |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        name = r.name + (f" — {r.note}" if r.note else "")
        spread = "—" if r.low is None else f"{r.low:.2f}–{r.high:.2f}"
        lines.append(f"| {name} | {fmt(r.ratio)} | {spread} | {fmt(r.wall_ratio)} | {r.target} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes and 3 repetitions (CI: that it runs)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repetitions per row (default 7; quick 3)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="the torch.compile rows (default: on, off with --quick: compiling takes 15-45 s per module)")
    p.add_argument("--only", choices=("eager", "compiled", "startup", "side_by_side", "test_pass"), default=None,
                   help="only these rows (written to results/bench_<rows>.json unless --out is given)")
    p.add_argument("--models", default="", help="compiled rows: only these interpretable models (comma-separated)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data", default=str(ROOT / "data" / "fashion-mnist"))
    p.add_argument("--out", default=None, help="default results/bench.json (with --only: results/bench_<rows>.json)")
    p.add_argument("--step-worker", nargs=3, metavar=("KEY", "THREADS", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step_worker:
        key, threads, steps = args.step_worker
        _step_worker(key, int(threads), int(steps), args.quick)
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    if args.compile is None:
        args.compile = not args.quick
    repeats = args.repeats or (3 if args.quick else 7)
    inner = 1 if args.quick else 3
    from bcos_lib.core.config import load_params
    params = load_params()
    rows: list[Row] = []
    batch = 8 if args.quick else params.train.batch_size
    kw = dict(params.model("bcos_cnn").kwargs)
    if args.quick:
        kw["channels"], kw["strides"] = [8, 8, 16], [1, 2, 2]
    big = (4, 16, 16, 16, 16, 1) if args.quick else (64, 64, 32, 32, 64, 1)
    big_name = f"batch {big[0]}, {big[1]}→{big[4]}, {big[2]}×{big[3]}, 3×3"
    pipeline_name = f"pipeline B-cos CNN's conv layers (batch {batch})"
    if args.only in (None, "eager"):
        rows += conv_rows(pipeline_name, pipeline_conv_shapes(kw, batch), repeats, inner)
        rows += conv_rows(big_name, [big], repeats, inner)
        rows += layer_family_rows(repeats, inner, args.quick)
        rows += training_rows(repeats, inner, args.quick)
        rows += loading_rows(repeats, inner, args.quick, Path(args.data))
        rows += explanation_rows(repeats, inner, args.quick, Path(args.data))
    if args.only in (None, "compiled") and args.compile:
        # the targets: ≤ 1.4× / 2.3× (MaxOut 1 / 2) at the pipeline's small layers, ≤ 1.15× / 2.0× at the larger shape
        rows += compiled_rows(repeats, inner, args.quick, {pipeline_name: (pipeline_conv_shapes(kw, batch), (1.4, 2.3)),
                                                           big_name: ([big], (1.15, 2.0))},
                              only=args.models.split(",") if args.models else None)
    if args.only in (None, "startup") and not args.quick:
        rows += startup_rows()
    if args.only in (None, "side_by_side"):
        rows += side_by_side_rows(1 if args.quick else 3, args.quick)
    if args.only in (None, "test_pass"):
        rows += test_pass_rows(repeats, args.quick)
    text = table(rows)
    print(f"{torch.get_num_threads()} thread(s), {repeats} interleaved repetitions per row, CPU-time ratios "
          f"({platform.processor() or platform.machine()}, torch {torch.__version__})")
    print(text)
    out = Path(args.out or ROOT / "results" / (f"bench_{args.only}.json" if args.only else "bench.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "repeats": repeats, "quick": args.quick,
                               "torch": str(torch.__version__), "rows": [r.__dict__ for r in rows]}, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
