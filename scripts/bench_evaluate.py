"""Benchmark: the batched "own" grid pointing game against a one-image-one-class loop.

Both score the same n×n grids (the grid pointing game, CoDA Nets §5.1) with the model's own explanation W(x) ⊙ x, on
the same model, in the same process, with the same number of threads:

* batched — :func:`bcos_lib.metrics.score_grids`: ``--batch-size`` grids per call, one
  shared forward pass for all n² classes of every grid and batched backward passes
  (:func:`bcos_lib.explain.explain`);
* loop — for every grid and every class in it: one forward and one backward pass on that
  single grid (batch size 1), then its contribution map and score;
* loop of explain() — the same loop through ``explain`` (so with its memory layout and
  frozen parameters), to show what batching alone gains.

Each is timed ``--repeats`` times, alternating, and the fastest run of each is compared,
in wall time and in this process's CPU time (the steadier measure when other programs
share the CPU); the scores of all three must agree.  The grids are drawn from all test
images by label (not from the model's confident pool), so an untrained model works: the
benchmark measures speed, not localisation.

What to expect on a CPU: the batched evaluation shares the forward pass but still needs one
backward pass per class, and on a compute-bound CNN a backward pass costs about as much as
a forward pass, so sharing the forward alone can at most halve the per-class cost; the rest
of the speed-up is batching (several grids per call keep both cores busy, batch-size-1 calls
do not).  So the per-class backward pass is what to make cheap: in explanation mode the
B-cos conv layer's MaxOut and fixed scale are one autograd node (``_FixedFactorUnit``) and
one-channel batches are convolved image by image (see ``BcosConv2d._conv``); both help the
loop too, but the batched evaluation, which is nearly all backward passes, more.  Measured
on this project's 2-core CPU for the pipeline's B-cos CNN (MaxOut 2, 84×84 grids, best of
5): 3.9–4.2× with both cores (torch's default), 4.3–4.45× for the trained checkpoint,
3.1–3.35× on one thread (before those two changes: 2.9–3.1× and 2.2–2.3×).

    python scripts/bench_evaluate.py                       # the pipeline's B-cos CNN (params.yaml), untrained
    python scripts/bench_evaluate.py --checkpoint models/bcos_cnn.pt   # the trained one
    python scripts/bench_evaluate.py --arch bcos_cnn --threads 1       # registry defaults, one thread
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bcos_lib import create_model, prepare_input
from bcos_lib.core.data import ImageDataset, load_fashion_mnist
from bcos_lib.explain import explain
from bcos_lib.layers.explanation_mode import explanation_mode
from bcos_lib.metrics import localisation_scores, make_grids, score_grids
from bcos_lib.core.utils import keep_freed_memory


def loop_scores(model: torch.nn.Module, grids: torch.Tensor, classes: torch.Tensor, n: int) -> torch.Tensor:
    """The naive way: per grid and per class, forward + backward on one grid, then score it."""
    model.eval()
    scores = torch.empty(classes.shape)
    for g in range(len(grids)):
        for k in range(classes.shape[1]):
            x = prepare_input(model, grids[g:g + 1]).requires_grad_(True)
            with explanation_mode(model):
                out = model(x)
                (w,) = torch.autograd.grad(out[0, classes[g, k]], x)
            contribution_map = (w * x).sum(1).detach()                     # (1, H, W)
            scores[g, k] = localisation_scores(contribution_map[None], n, cells=torch.tensor([[k]]))[0, 0]
    return scores


def explain_loop_scores(model: torch.nn.Module, grids: torch.Tensor, classes: torch.Tensor, n: int) -> torch.Tensor:
    """The loop again, but each (grid, class) through ``explain`` (its memory layout and frozen
    parameters included): what is left of the speed-up is batching and the shared forward alone."""
    scores = torch.empty(classes.shape)
    for g in range(len(grids)):
        x = prepare_input(model, grids[g:g + 1])
        for k in range(classes.shape[1]):
            contribution_map = explain(model, x, classes[g:g + 1, k:k + 1], colour=False).contribution_map
            scores[g, k] = localisation_scores(contribution_map, n, cells=torch.tensor([[k]]))[0, 0]
    return scores


def batched_scores(model: torch.nn.Module, grids: torch.Tensor, classes: torch.Tensor, n: int,
                   batch_size: int) -> torch.Tensor:
    df = score_grids(model, grids, classes, "own", n=n, batch_size=batch_size)
    return torch.tensor(df["score"].to_numpy()).reshape(classes.shape).float()


def load_test_images(root: Path, n_random: int) -> ImageDataset:
    try:
        return load_fashion_mnist(root, "test")
    except Exception as e:  # noqa: BLE001 - any missing/damaged data: fall back to random images
        print(f"(no Fashion-MNIST at {root}: {e}; using random images)")
        gen = torch.Generator().manual_seed(0)
        return ImageDataset(torch.rand(n_random, 1, 28, 28, generator=gen), torch.arange(n_random) % 10,
                            tuple(str(i) for i in range(10)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a model file written by the train stage (default: an untrained model)")
    p.add_argument("--model", default="bcos_cnn",
                   help="without --checkpoint: the params.yaml entry (models.<key>) whose architecture is built")
    p.add_argument("--arch", help="without --checkpoint: a registered model with its default arguments instead")
    p.add_argument("--data", default=str(ROOT / "data" / "fashion-mnist"))
    p.add_argument("--grid-size", type=int, default=3)
    p.add_argument("--grids", type=int, default=24, help="grids scored by the batched evaluation per run")
    p.add_argument("--loop-grids", type=int, default=6, help="grids scored by the loop per run")
    p.add_argument("--batch-size", type=int, default=4, help="grids per batch of the batched evaluation")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads, the same for both (0: torch's default, one per core)")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's allocator as it is (the pipeline tunes it: bcos_lib.core.utils.keep_freed_memory)")
    args = p.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.default_allocator:
        keep_freed_memory()  # as the pipeline does; the same for both sides of the comparison
    torch.manual_seed(0)
    if args.checkpoint:
        from bcos_lib.core.pipeline import load_model
        model, what = load_model(args.checkpoint), args.checkpoint
    elif args.arch:
        model, what = create_model(args.arch).eval(), f"untrained {args.arch} (registry defaults)"
    else:
        from bcos_lib.core.config import load_params
        entry = load_params().model(args.model)
        model = create_model(entry.arch, **entry.kwargs).eval()
        what = f"untrained models.{args.model} of params.yaml ({entry.arch}, {entry.kwargs})"
    ds = load_test_images(Path(args.data), 1000)
    pool = {c: torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)}
    n = args.grid_size
    grids, classes = make_grids(ds, pool, n, max(args.grids, args.loop_grids), seed=0)
    h, w = grids.shape[-2:]
    print(f"model: {what}; {n}×{n} grids of {h}×{w} px, {n * n} classes each; "
          f"{torch.get_num_threads()} thread(s); best of {args.repeats} runs")

    # warm-up (allocator, kernels) and the check that both compute the same scores
    check = min(2, args.loop_grids)
    s_loop = loop_scores(model, grids[:check], classes[:check], n)
    s_batch = batched_scores(model, grids[:check], classes[:check], n, args.batch_size)
    s_explain = explain_loop_scores(model, grids[:check], classes[:check], n)
    diff = max(float((s_loop - s_batch).abs().max()), float((s_explain - s_batch).abs().max()))

    # wall time and CPU time of this process: on a shared machine the CPU time is the steadier measure
    wall: dict[str, list[float]] = {"batched": [], "loop": [], "explain_loop": []}
    cpu: dict[str, list[float]] = {"batched": [], "loop": [], "explain_loop": []}
    runs = {"batched": (lambda: batched_scores(model, grids[:args.grids], classes[:args.grids], n, args.batch_size),
                        args.grids),
            "loop": (lambda: loop_scores(model, grids[:args.loop_grids], classes[:args.loop_grids], n), args.loop_grids),
            "explain_loop": (lambda: explain_loop_scores(model, grids[:args.loop_grids], classes[:args.loop_grids], n),
                             args.loop_grids)}
    for _ in range(args.repeats):
        for name, (fn, count) in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - w0) / count)
            cpu[name].append((time.process_time() - c0) / count)

    def rate(seconds_per_grid: list[float]) -> str:
        best = min(seconds_per_grid)
        return f"{1 / best:6.2f} grids/s ({n * n / best:6.1f} maps/s)"

    print(f"{'':58s} {'wall time (best)':>28s}   {'CPU time (best)':>28s}")
    print(f"{'batched: ' + str(args.batch_size) + ' grids per batch, shared forward + batched VJPs':58s} "
          f"{rate(wall['batched']):>28s}   {rate(cpu['batched']):>28s}")
    print(f"{'loop: batch size 1, forward + backward per class':58s} {rate(wall['loop']):>28s}   {rate(cpu['loop']):>28s}")
    print(f"{'loop of explain(): batch size 1, one class per call':58s} {rate(wall['explain_loop']):>28s}   "
          f"{rate(cpu['explain_loop']):>28s}")
    ratio_wall = min(wall["loop"]) / min(wall["batched"])
    ratio_cpu = min(cpu["loop"]) / min(cpu["batched"])
    ratio_median = statistics.median(wall["loop"]) / statistics.median(wall["batched"])
    print(f"speed-up (batched / loop): {ratio_wall:.2f}× wall time, {ratio_cpu:.2f}× CPU time "
          f"(median wall-time runs: {ratio_median:.2f}×)")
    print(f"  (batched / loop of explain(), the share of batching alone: "
          f"{min(wall['explain_loop']) / min(wall['batched']):.2f}× wall time, "
          f"{min(cpu['explain_loop']) / min(cpu['batched']):.2f}× CPU time)")
    print(f"max |score difference| between the batched scores and the loop's: {diff:.2e}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
