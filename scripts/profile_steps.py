"""Where an interpretable model's training step spends its time, beside its plain twin's.

    python scripts/profile_steps.py                  # bcos_cnn, coda_net, lwta_cnn (results/profile_steps.json)
    python scripts/profile_steps.py bcos_cnn

For each model of ``params.yaml`` and the model it is compared with (its ``twin``, else
``std_cnn``), one training step of the pipeline (its batch size and loss, the model built as the
pipeline builds it, random weights and inputs) is run a few times under ``torch.profiler``; the
step's self CPU time is grouped into the operators it calls.  The table says which operators the
interpretable model spends its extra time in: convolutions (a MaxOut-2 B-cos unit is two
convolutions, a rank-r dynamic alignment unit r + 1 filter responses), the elementwise passes over
full activations (norms, cosines, squashing, Gumbel noise), and what the twin spends on the same
kind of work.  ``make bench`` measures the ratios; this says what stands in the way of a smaller one.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

#: operator families: a name prefix of an aten operator → the family it is counted in
FAMILIES = (
    ("convolution", ("aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::conv2d",
                     "aten::thnn_conv2d", "aten::_slow_conv2d", "aten::convolution_backward", "aten::mkldnn_convolution_backward",
                     "aten::_slow_conv2d_backward", "aten::_nnpack")),
    ("batch norm", ("aten::native_batch_norm", "aten::batch_norm", "aten::_batch_norm", "aten::native_batch_norm_backward")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("reductions", ("aten::sum", "aten::amax", "aten::max", "aten::mean", "aten::norm", "aten::linalg_vector_norm",
                    "aten::argmax", "aten::softmax", "aten::_softmax", "aten::_softmax_backward_data")),
    ("random numbers", ("aten::rand", "aten::uniform_", "aten::exponential_", "aten::rand_like")),
    ("optimiser", ("aten::_foreach", "Optimizer.step", "aten::lerp", "aten::addcmul_", "aten::addcdiv_")),
)


def family(name: str) -> str:
    for fam, prefixes in FAMILIES:
        if name.startswith(prefixes):
            return fam
    return "elementwise and other"


def profile_step(step, repeats: int = 5) -> dict[str, float]:
    """ms of self CPU time per step, by operator family (and the total)."""
    from torch.profiler import ProfilerActivity, profile
    step()   # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    out: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        if ev.key.startswith("ProfilerStep"):
            continue
        out[family(ev.key)] += ev.self_cpu_time_total / 1000 / repeats
    out["total"] = sum(out.values())
    return dict(out)


def run(keys: list[str]) -> dict[str, dict]:
    import bench
    from bcos_lib.core.config import load_params
    params = load_params()
    pairs = bench.model_pairs(params)
    result = {}
    for key in keys:
        twin = pairs.get(key) or params.model(key).twin or "std_cnn"
        batch = params.train_config(key).batch_size
        x, y = torch.rand(batch, 1, 28, 28), torch.arange(batch) % 10
        row = {}
        for k in (key, twin):
            torch.manual_seed(0)
            cl = bool(params.train_config(k).channels_last)
            row[k] = profile_step(bench.train_step(bench._build(params, k, False), x, y, channels_last=cl))
        result[key] = {"twin": twin, "batch": batch, "ms_per_step": row}
        a, b = row[key], row[twin]
        print(f"\n{key} ÷ {twin} (batch {batch}): {a['total']:.1f} ÷ {b['total']:.1f} ms per step "
              f"(throughput {b['total'] / a['total']:.2f}×)")
        for fam in sorted(set(a) | set(b), key=lambda f: -a.get(f, 0.0)):
            if fam != "total":
                print(f"  {fam:<22} {a.get(fam, 0.0):8.1f} ms  {b.get(fam, 0.0):8.1f} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keys", nargs="*", default=["bcos_cnn", "coda_net", "lwta_cnn"])
    ap.add_argument("--out", default=str(ROOT / "results" / "profile_steps.json"))
    args = ap.parse_args(argv)
    data = {"torch": torch.__version__, "threads": torch.get_num_threads(), "models": run(args.keys)}
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
