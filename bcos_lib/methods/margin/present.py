"""The margin study's figure and report section: the per-epoch localisation curves that
``tracked_localisation`` wrote to each model's history.csv, and the margin of each B-cos model's
own explanation over the best post-hoc curve of the group's standard CNN (CoDA Nets §5.1;
B-cos v1 §5.2)."""
from __future__ import annotations

from typing import Any, Mapping

from ...explain import attribution_label
from ...core.contract import ModelResult, results_of

GROUP = "margin"
PREFIX = "tracked_localisation_"


def _series(r: ModelResult) -> dict[str, Any]:
    """{attribution: (epochs, scores)} from a model's history."""
    h = r.history
    if h is None:
        return {}
    return {c[len(PREFIX):]: (h["epoch"].to_numpy(), h[c].to_numpy()) for c in h.columns if c.startswith(PREFIX)}


def _best_posthoc(models: list[ModelResult]) -> tuple[str, str, Any] | None:
    """(model key, attribution, (epochs, scores)) of the post-hoc curve that ends highest among the
    group's models without an own explanation."""
    best = None
    for r in models:
        for m, (ep, sc) in _series(r).items():
            if m != "own" and (best is None or sc[-1] > best[2][1][-1]):
                best = (r.key, m, (ep, sc))
    return best


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    models = list(results_of(results, group=GROUP))
    if not any(_series(r) for r in models):
        return {}
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    post = [r for r in models if "own" not in _series(r)]
    best = _best_posthoc(post)
    for r in models:
        s = _series(r)
        if "own" in s:
            ep, sc = s["own"]
            line, = ax.plot(ep, sc, marker="o", label=f"{r.label or r.key}: own")
            if best is not None:
                bep, bsc = best[2]
                k = min(len(sc), len(bsc))
                ax2.plot(ep[:k], sc[:k] - bsc[:k], marker="o", color=line.get_color(), label=r.label or r.key)
        for m, (ep, sc) in s.items():
            if m != "own" and r in post:
                ax.plot(ep, sc, ls="--", marker="s", label=f"{r.label or r.key}: {attribution_label(m)}")
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="epoch", ylabel="localisation (fixed grids)", title="own explanation vs post-hoc, per epoch")
    ax.legend(fontsize=8)
    ax2.axhline(0, color="black", lw=0.5)
    title = f"margin over {attribution_label(best[1])} on {best[0]}" if best else "margin"
    ax2.set(xlabel="epoch", ylabel="own − best post-hoc (localisation)", title=title)
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
    fig.tight_layout()
    return {"margin": fig}


def report(results: Mapping[str, ModelResult]) -> str:
    models = list(results_of(results, group=GROUP))
    post = [r for r in models if _series(r) and "own" not in _series(r)]
    best = _best_posthoc(post)
    rows = []
    for r in models:
        s = _series(r)
        if "own" not in s:
            continue
        ep, sc = s["own"]
        margin = "–" if best is None else f"{sc[-1] - best[2][1][-1]:+.3f}"
        kw = r.entry.kwargs
        rows.append(f"| `{r.key}` | {kw.get('b', '–')} | {kw.get('logit_temperature', '–')} | {kw.get('max_out', '–')} "
                    f"| {kw.get('encoding', 'add_inverse')} | {int(ep[-1])} | {sc[-1]:.3f} | {margin} |")
    if not rows:
        return ""
    ref = "" if best is None else (f" The reference is the best post-hoc curve of the group's standard CNN: "
                                   f"{attribution_label(best[1])} on `{best[0]}`, {best[2][1][-1]:.3f} after the last epoch.")
    return ("### Margin study: own explanation against the best post-hoc attribution, over training\n\n"
            "Localisation on the same fixed grids after every epoch (drawn from all test images, so the "
            f"scores differ from the table above, which uses each model's confident pool).{ref}\n\n"
            "| model | B | T | MaxOut | encoding | epochs | own | margin |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n![margin](figures/margin.png)")
