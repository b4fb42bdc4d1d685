"""Stage explain: explanations of one trained model and a check of the explanation identity."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..core.data import ImageDataset
from ..layers.explanation_mode import is_explainable
from ..core.pipeline import Run, load_data, load_trained, write_timing
from ..core.utils import atomic_torch_save, versions, write_json


def pick_images(ds: ImageDataset, n: int) -> torch.Tensor:
    """Indices of ``n`` test images, one per class in turn (the same every run)."""
    picked: list[int] = []
    for rank in range(len(ds)):
        for c in range(ds.num_classes):
            idx = (ds.labels == c).nonzero().flatten()
            if rank < len(idx) and len(picked) < n:
                picked.append(int(idx[rank]))
        if len(picked) >= n:
            break
    return torch.tensor(picked)


def run(run: Run, key: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Explanations of ``models.<key>`` for a fixed set of test images, and a check of the
    explanation identity (Σ contributions = logit − b) on a larger batch."""
    from ..explain import dynamic_linear_output, explain
    from ..models.base import prepare_input

    cfg = run.params.explain
    model = load_trained(run, key)
    test_ds = load_data(run, "test")
    t0 = time.time()
    idx = pick_images(test_ds, cfg.n_images)
    x = prepare_input(model, test_ds.images[idx]).to(run.device)
    main = explain(model, x, smooth=cfg.smooth).squeeze_targets()
    # several classes for the same images: the k highest logits
    k = min(cfg.n_classes_per_image, main.logits.shape[1])
    multi = explain(model, x[:2], targets=main.logits[:2].topk(k, dim=1).indices, smooth=cfg.smooth)
    # intermediate layers ("interpretable depth", B-cos v2 §5.3): the most active channel of each
    # layer the model names (ImageClassifier.explanation_layers)
    layers = {}
    hidden = model.explanation_layers() if hasattr(model, "explanation_layers") else {}
    for name, title in hidden.items():
        with torch.no_grad():
            acts = dynamic_linear_output(model, x[:1], layer=name)
        ex = explain(model, x[:1], targets=acts.argmax(1), layer=name, smooth=cfg.smooth).squeeze_targets()
        layers[name] = {"title": title, "channel": int(ex.targets[0]), "contribution_map": ex.contribution_map[0].cpu(),
                        "rgba": None if ex.rgba is None else ex.rgba[0].cpu()}
    # the identity check on up to batch_size test images
    xs = prepare_input(model, test_ds.images[: cfg.batch_size]).to(run.device)
    chk = explain(model, xs, colour=False).squeeze_targets()
    # relative to the input-dependent part y − b, so that the fixed bias cannot hide an error
    dynamic = chk.target_outputs - chk.bias
    err = ((chk.contribution_map.flatten(1).sum(1) - dynamic).abs() / dynamic.abs().clamp_min(1e-6)).cpu()
    explainable = is_explainable(model)
    metrics = {"model": key, "explainable": explainable, "n_checked": len(xs),
               "identity_max_rel_error": float(err.max()), "identity_median_rel_error": float(err.median()),
               "sums_to_logit": bool(explainable and float(err.max()) < 1e-3),
               "seed": run.params.base.seed, "profile": run.params.base.profile, "versions": versions()}
    out = run.path("results", "explain", key)
    atomic_torch_save({"key": key, "label": run.params.model(key).label or key, "indices": idx,
                       "images": test_ds.images[idx], "labels": test_ds.labels[idx], "classes": test_ds.classes,
                       "logits": main.logits.cpu(), "targets": main.targets.cpu(),
                       "contribution_map": main.contribution_map.cpu(),
                       "rgba": None if main.rgba is None else main.rgba.cpu(),
                       "multi": {"targets": multi.targets.cpu(), "contribution_map": multi.contribution_map.cpu(),
                                 "rgba": None if multi.rgba is None else multi.rgba.cpu()},
                       "layers": layers, "explainable": explainable}, out / "explanations.pt")
    write_json(metrics, out / "metrics.json")
    write_timing(run, "explain", key, time.time() - t0)
    log(f"{key}: explanation identity max relative error {metrics['identity_max_rel_error']:.2e} "
        f"({'dynamic linear' if explainable else 'not dynamic linear: W⊙x is Input×Gradient'})")
    return metrics
