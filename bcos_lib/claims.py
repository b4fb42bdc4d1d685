"""The claims ledger: each paper's claims, tested on what the pipeline measured, with a verdict.

A claim is data (:class:`Claim`), declared by its paper's package in ``methods/<paper>/claims.py``
(``CLAIMS``): the claim in one sentence, the paper's number(s) with their setting, the models and
the measurement that test it, the side the paper is on (``direction``, ``threshold``) and the
test (``test``).  :func:`evaluate_claim` computes, from the results files of the last
``dvc repro``, an estimate with a 95 % interval and one of four verdicts:

``reproduced``
    the whole interval lies on the paper's side of the threshold;
``not reproduced``
    the whole interval lies on the other side;
``inconclusive``
    the interval contains the threshold (or there is no interval to judge by);
``under-trained``
    not reproduced or inconclusive, and a model the claim rests on is flagged by the
    under-training check (:func:`under_trained`): the claim cannot be judged from it.

**Samples.**  A measurement is read per model as *samples* (:class:`Samples`): the per-grid
mean scores of the grid pointing game (the grid is the unit resampled: the n² cells of one
grid share their images and maps), the per-image correlations of faithfulness correlation,
the per-image outcomes behind an accuracy, or a single number (an AUC, a share, epochs to a
target accuracy) when no per-sample data exist.  Samples carry ids, so that two sides scored on
the same grids or images are compared *paired*.

**The interval of one training seed** is scipy's bias-corrected and accelerated bootstrap
(``scipy.stats.bootstrap``, ``method="BCa"``, 2 000 resamples, seeded): paired over the shared
samples when both sides have them, else each side resampled on its own; a trend (``test="trend"``)
is the least-squares slope of the group's means against the setting (``by``), each model's
samples resampled independently.

**Across seeds.**  A model entry with ``seeds: [...]`` in ``params.yaml`` is trained once per seed
(its replicas ``<key>_s<seed>``); the k seeds' estimates are combined into their mean with a
t-interval (k − 1 degrees of freedom) whose standard error is the larger of the spread of the
seed estimates and the bootstrap standard error of one seed, each divided by √k: the seed spread
already contains each seed's evaluation noise, and the larger one guards a small k against a
spread that is small by chance.  With one seed the interval is the bootstrap interval, and the
ledger says so (``seeds: 1``): it covers the evaluation samples, not the training seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .core.contract import ModelResult

__all__ = ["Arm", "Claim", "Samples", "SourceContext", "ClaimError", "VERDICTS", "register_source", "samples_of", "replicas", "current_checks", "retrained_since",
           "Estimate", "seed_estimate", "combine_seeds", "verdict", "under_trained", "unchecked", "evaluate_claim", "ledger",
           "claims_table", "LEVEL", "N_RESAMPLES", "SAME_ACCURACY_POINTS", "SAME_SETTINGS_POINTS"]

LEVEL = 0.95
N_RESAMPLES = 2000
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "under-trained")


class ClaimError(ValueError):
    """A claim cannot be evaluated as declared (a typo in its declaration, not a missing result)."""


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a model (its ``params.yaml`` key), and for a measurement of an
    attribution, which one; ``column`` chooses a variant (e.g. ``score_unsmoothed``) or, for
    ``metric="summary"``, a dotted path into the model's evaluate ``metrics.json``."""

    model: str
    attribution: str = ""
    column: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, as data.

    ``test``: ``"difference"`` (arms[0] − arms[1]), ``"value"`` (arms[0] alone, e.g. a ratio) or
    ``"trend"`` (slope of the models of ``group``, ordered by their ``by`` keyword, against
    ``by``, or its log10 with ``log_x``).  ``direction``: the paper's side, ``"greater"`` (the
    statistic exceeds ``threshold``) or ``"less"``.  ``metric``: the measurement read as samples
    (:func:`samples_of`)."""

    id: str
    claim: str
    paper: str
    paper_value: str
    metric: str
    short: str = ""     # the claim in a few words, for the README's table (default: ``claim``)
    test: str = "difference"
    arms: tuple[Arm, ...] = ()
    direction: str = "greater"
    threshold: float = 0.0
    group: str = ""
    by: str = ""
    log_x: bool = False
    unit: str = ""
    note: str = ""
    headline: bool = False   # the pipeline's central comparison: results/summary.json (margin, margin_low)

    def __post_init__(self) -> None:
        if self.test not in ("difference", "value", "trend"):
            raise ClaimError(f"claim {self.id}: test must be difference, value or trend (got {self.test!r})")
        if self.direction not in ("greater", "less"):
            raise ClaimError(f"claim {self.id}: direction must be greater or less (got {self.direction!r})")
        need = {"difference": 2, "value": 1, "trend": 0}[self.test]
        if len(self.arms) != need and not (self.test == "trend" and self.arms):
            raise ClaimError(f"claim {self.id}: a {self.test} test needs {need} arm(s), got {len(self.arms)}")
        if self.test == "trend" and not (self.group and self.by):
            raise ClaimError(f"claim {self.id}: a trend test needs a group and the keyword `by` that orders it")

    def models(self, results: Mapping[str, ModelResult]) -> list[str]:
        """The model keys the claim rests on (seed 0's; replicas follow them): the arms' models and a
        model that an arm's ``column`` names (e.g. the from-scratch model of an epochs ratio, whose
        accuracy is the target: its seeds and its training length count as much as the arm's)."""
        if self.test == "trend":
            return [k for k, r in results.items() if r.entry.group == self.group and not _replica_of(r)]
        return list(dict.fromkeys([a.model for a in self.arms] + [a.column for a in self.arms if a.column in results]))


@dataclass
class Samples:
    """A measurement of one model: ``values`` (one per sample), ``ids`` (what each sample is, for
    pairing; None when the samples cannot be paired) — or one number (``scalar``)."""

    values: np.ndarray
    ids: np.ndarray | None = None

    @classmethod
    def outcomes(cls, share: float, n: int, hit: float = 1.0) -> "Samples":
        """``n`` unpaired outcomes (``hit`` or 0) whose mean is ``share`` × ``hit``: the samples
        behind a share when only the share and its count were kept."""
        hits = int(round(share * n))
        return cls(np.r_[np.full(hits, hit), np.zeros(n - hits)], None)

    @property
    def scalar(self) -> bool:
        return self.ids is None and len(self.values) == 1

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


# ============================================================================= samples
@dataclass(frozen=True)
class SourceContext:
    """What a sample source may look at beyond its model: every result, and which training seed
    (0 = the entry itself, 1 = its first replica, …) is being read."""

    results: Mapping[str, ModelResult]
    seed_index: int = 0

    def partner(self, key: str) -> ModelResult | None:
        """Model ``key`` at the same seed index (None when it has no such replica)."""
        reps = replicas(self.results, key)
        return reps[self.seed_index] if self.seed_index < len(reps) else None


Source = Callable[[ModelResult, Arm, SourceContext], "Samples | None"]
_SOURCES: dict[str, Source] = {}


def register_source(name: str) -> Callable[[Source], Source]:
    """Register how the measurement ``name`` is read as samples (a paper's ``claims.py`` may add
    its own)."""
    def deco(fn: Source) -> Source:
        _SOURCES[name] = fn
        return fn
    return deco


def samples_of(r: ModelResult, metric: str, arm: Arm, ctx: SourceContext | None = None) -> Samples | None:
    """The samples of ``metric`` for one model (None when it was not measured)."""
    if metric not in _SOURCES:
        raise ClaimError(f"no sample source {metric!r}; known: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[metric](r, arm, ctx or SourceContext({r.key: r}))


def _grid_table(r: ModelResult, table: str, arm: Arm, shared: bool) -> Samples | None:
    df = r.tables.get(table)
    if df is None or not len(df):
        return None
    if "attribution" in df.columns:
        df = df[df["attribution"] == (arm.attribution or "own")]
    if not len(df):
        return None
    per_grid = df.groupby("grid")[arm.column or "score"].mean()
    ids = per_grid.index.to_numpy() if shared else np.array([f"{r.key}:{g}" for g in per_grid.index])
    return Samples(per_grid.to_numpy(float), ids)


@register_source("localisation")
def _localisation(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Per-grid mean scores of the grid pointing game on the model's own confident pool: two
    attributions of one model pair by grid; two models do not (their grids differ)."""
    return _grid_table(r, "localisation", arm, shared=False)


@register_source("paired_localisation")
def _paired_localisation(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Per-grid mean scores on the grids every model shares (drawn from all test images)."""
    return _grid_table(r, "paired_localisation", arm, shared=True)


@register_source("fixed_grid_localisation")
def _fixed_grid_localisation(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """B-cosification's own-explanation scores on grids drawn from all test images (shared by every model)."""
    return _grid_table(r, "fixed_grid_localisation", arm, shared=True)


@register_source("faithfulness_correlation")
def _faith_corr(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    df = r.tables.get("faithfulness_correlation")
    if df is None or not len(df):
        return None
    df = df[df["attribution"] == (arm.attribution or "own")].dropna(subset=["correlation"])
    return Samples(df["correlation"].to_numpy(float), df["image"].to_numpy()) if len(df) else None


@register_source("accuracy")
def _accuracy(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Test accuracy (%) as the outcome of each test image (correct = 100, wrong = 0): from the
    evaluate stage's ``predictions`` table (paired image by image across models), else rebuilt
    from the accuracy and the number of test images (unpaired)."""
    p = r.tables.get("predictions")
    if p is not None and len(p):
        return Samples(100.0 * (p["predicted"] == p["label"]).to_numpy(float), p["image"].to_numpy())
    if not r.train or r.train.get("test_accuracy") is None:
        return None
    n = int(r.train.get("n_test") or 0)
    if n <= 0:
        return Samples(np.array([float(r.train["test_accuracy"])]))
    return Samples.outcomes(float(r.train["test_accuracy"]) / 100, n, hit=100.0)


@register_source("summary")
def _summary(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """One number from the model's evaluate metrics.json: ``arm.column`` is its dotted path
    (``{attribution}`` in it is replaced by the arm's attribution)."""
    node: Any = r.evaluate
    for part in arm.column.replace("{attribution}", arm.attribution).split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if node is None else Samples(np.array([float(node)]))


# ============================================================================= statistics
def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., Any], paired: bool,
               seed: int) -> tuple[float, float, float]:
    """(low, high, standard error) of scipy's BCa bootstrap; percentile when BCa is undefined
    (e.g. every resample equal)."""
    import warnings

    from scipy import stats
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # BCa on a degenerate resample: the percentile fallback
            warnings.filterwarnings("ignore", message=".*BCa confidence interval cannot be calculated.*")
            res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=N_RESAMPLES, batch=200,
                                  confidence_level=LEVEL, method=method, random_state=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return float(lo), float(hi), float(res.standard_error)
    return float("nan"), float("nan"), float("nan")


@dataclass
class Estimate:
    """One seed's statistic: value, interval (None when it is one number) and how it was got."""

    value: float
    ci: tuple[float, float] | None
    se: float | None
    n: int
    paired: bool


def _slope(x: np.ndarray) -> Callable[..., np.ndarray]:
    xc = x - x.mean()

    def stat(*groups: np.ndarray, axis: int = -1) -> np.ndarray:
        means = np.stack([np.mean(g, axis=axis) for g in groups], axis=-1)
        return (means * xc).sum(-1) / (xc ** 2).sum()
    return stat


def seed_estimate(claim: Claim, samples: list[Samples], x: np.ndarray | None = None, seed: int = 0) -> Estimate:
    """The claim's statistic on one training seed's samples (one per arm, or per model of a trend)."""
    if claim.test == "value":
        s = samples[0]
        if s.scalar:
            return Estimate(s.mean, None, None, 1, False)
        lo, hi, se = _bootstrap((s.values,), lambda v, axis=-1: np.mean(v, axis=axis), False, seed)
        return Estimate(s.mean, (lo, hi), se, len(s.values), False)
    if claim.test == "trend":
        assert x is not None
        value = float(_slope(x)(*[s.values for s in samples]))
        if any(s.scalar for s in samples):
            return Estimate(value, None, None, len(samples), False)
        lo, hi, se = _bootstrap(tuple(s.values for s in samples), _slope(x), False, seed)
        return Estimate(value, (lo, hi), se, sum(len(s.values) for s in samples), False)
    a, b = samples
    if a.scalar or b.scalar:
        return Estimate(a.mean - b.mean, None, None, 1, False)
    if a.ids is not None and b.ids is not None:
        common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
        if len(common) >= 2:
            d = a.values[ia] - b.values[ib]
            lo, hi, se = _bootstrap((d,), lambda v, axis=-1: np.mean(v, axis=axis), False, seed)
            return Estimate(float(d.mean()), (lo, hi), se, len(common), True)
    lo, hi, se = _bootstrap((a.values, b.values),
                            lambda u, v, axis=-1: np.mean(u, axis=axis) - np.mean(v, axis=axis), False, seed)
    return Estimate(a.mean - b.mean, (lo, hi), se, min(len(a.values), len(b.values)), False)


def combine_seeds(estimates: list[Estimate]) -> tuple[float, tuple[float, float] | None]:
    """The mean of the seeds' estimates and its 95 % interval (module docstring: *Across seeds*)."""
    from scipy import stats
    values = np.array([e.value for e in estimates], float)
    k = len(values)
    if k == 1:
        return float(values[0]), estimates[0].ci
    spread = float(values.std(ddof=1))
    boot = [e.se for e in estimates if e.se is not None and np.isfinite(e.se)]
    se = max(spread, float(np.sqrt(np.mean(np.square(boot)))) if boot else 0.0) / math.sqrt(k)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 1)) * se
    m = float(values.mean())
    return m, (m - half, m + half)


def verdict(claim: Claim, ci: tuple[float, float] | None, starved: bool) -> str:
    """The verdict of an interval against the claim's side of its threshold (module docstring)."""
    if ci is None or not all(np.isfinite(ci)):
        v = "inconclusive"
    else:
        lo, hi = ci
        above, below = lo > claim.threshold, hi < claim.threshold
        on_side, off_side = (above, below) if claim.direction == "greater" else (below, above)
        v = "reproduced" if on_side else "not reproduced" if off_side else "inconclusive"
    return "under-trained" if starved and v != "reproduced" else v


# ============================================================================= models and seeds
def _replica_of(r: ModelResult) -> str:
    return getattr(r.entry, "replica_of", "") or ""


def replicas(results: Mapping[str, ModelResult], key: str) -> list[ModelResult]:
    """A model and its seed replicas (``<key>_s<seed>``), seed 0's first; those not trained are left out."""
    out = [results[key]] if key in results else []
    out += [r for r in results.values() if _replica_of(r) == key]
    return [r for r in out if r.train is not None]


#: how many points of accuracy a model may gain with 3× its epochs and still count as trained
UNDER_TRAINED_POINTS = 1.0


def under_trained(r: ModelResult, convergence: Mapping[str, Any],
                  tolerance: float = UNDER_TRAINED_POINTS) -> str | None:
    """Why the model is flagged as under-trained, or None: its accuracy is more than ``tolerance``
    points below what the same model reached with 3× the epochs (``convergence``: the file
    ``results/convergence.json`` that ``scripts/convergence.py`` writes, key → {epochs, accuracy,
    long_epochs, long_accuracy}).  A model the check has not measured is not flagged here (see
    :func:`unchecked`)."""
    c = convergence.get(_replica_of(r) or r.key)
    if c is None:
        return None
    gap = float(c["long_accuracy"]) - float(c["accuracy"])
    if gap > tolerance:
        return f"{gap:.1f} points below its accuracy after {c['long_epochs']} epochs"
    return None


#: a recorded test accuracy that is the model's now (metrics.json keeps two decimals)
SAME_ACCURACY_POINTS = 0.005

#: how far (in points of test accuracy) a model retrained with the same settings may land from the one a
#: measurement was made of and still be that model: the same settings on another CPU (another order of
#: floating-point sums) moved the pipeline's 36 models by 0.0–0.4 points (median 0.08); beyond 1 point the code that
#: trains it changed, and the measurement describes another model
SAME_SETTINGS_POINTS = 1.0


def retrained_since(r: ModelResult | None, accuracy: float, tolerance: float = SAME_ACCURACY_POINTS,
                    recorded: str | None = None,
                    fingerprint: str | None = None) -> bool:
    """True when a measurement that recorded ``accuracy`` of model ``r`` describes an earlier model.

    With the settings fingerprints of both (``recorded``, the measurement's; ``fingerprint``, the
    model's now: :func:`bcos_lib.settings.training_fingerprint`): when they differ, or when the
    accuracy now is more than :data:`SAME_SETTINGS_POINTS` away.  Without them (an older
    measurement): when the accuracy now differs by more than ``tolerance`` — which a retraining of
    the same settings on another machine does too."""
    now = (r.train or {}).get("test_accuracy") if r is not None else None
    if now is None:
        return False
    if recorded and fingerprint:
        return recorded != fingerprint or abs(float(now) - float(accuracy)) > SAME_SETTINGS_POINTS
    return abs(float(now) - float(accuracy)) > tolerance


def current_checks(convergence: Mapping[str, Any], results: Mapping[str, ModelResult],
                   fingerprints: Mapping[str, str | None] | None = None,
                   tolerance: float = SAME_ACCURACY_POINTS) -> tuple[dict[str, Any], list[str]]:
    """The under-training checks that still describe the trained models, and the keys of those
    that do not.  A check records the accuracy its model had when it was measured and the settings
    fingerprint it was trained with (``settings``); ``fingerprints`` are the models' fingerprints now.
    When the settings differ, or the same settings gave an accuracy more than
    :data:`SAME_SETTINGS_POINTS` away (the code that trains it changed), the check is of an earlier
    model: it is left out, and the ledger treats the model as not checked until
    ``scripts/convergence.py`` measures it again (see :func:`retrained_since`).  The same settings
    trained on another machine keep their check.  Models without results are kept as they are."""
    kept, stale = {}, []
    for key, c in convergence.items():
        if retrained_since(results.get(key), c["accuracy"], tolerance, c.get("settings"),
                           (fingerprints or {}).get(key)):
            stale.append(key)
        else:
            kept[key] = c
    return kept, stale


def unchecked(r: ModelResult, convergence: Mapping[str, Any]) -> bool:
    """True when the under-training check has not measured the model."""
    return (_replica_of(r) or r.key) not in convergence


# ============================================================================= one claim, the ledger
def evaluate_claim(claim: Claim, results: Mapping[str, ModelResult], convergence: Mapping[str, Any] | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """The ledger row of one claim: estimate, interval, seeds, samples, verdict and why."""
    row: dict[str, Any] = {"id": claim.id, "claim": claim.claim, "short": claim.short or claim.claim,
                           "paper": claim.paper,
                           "paper_value": claim.paper_value, "metric": claim.metric, "test": claim.test,
                           "direction": claim.direction, "threshold": claim.threshold, "unit": claim.unit,
                           "note": claim.note, "arms": [asdict(a) for a in claim.arms]}
    if claim.headline:
        row["headline"] = True
    keys = claim.models(results)
    row["models"] = keys
    missing = [k for k in keys if not replicas(results, k)]
    if missing or not keys:
        row.update(verdict="not run", reason=f"not trained in this profile: {', '.join(missing) or claim.group}",
                   estimate=None, ci_low=None, ci_high=None, seeds=0, n=0, paired=False, under_trained={},
                   unchecked=[])
        return row
    per_model = {k: replicas(results, k) for k in keys}
    n_seeds = min(len(v) for v in per_model.values())
    x = None
    if claim.test == "trend":
        x = np.array([float(_kwarg(results[k], claim.by)) for k in keys])
        if claim.log_x:
            x = np.log10(x)
        order = np.argsort(x)
        keys, x = [keys[i] for i in order], x[order]
    estimates, reason = [], ""
    for s in range(n_seeds):
        ctx = SourceContext(results, s)
        if claim.test == "trend":
            template = claim.arms[0] if claim.arms else Arm("")
            samples = [samples_of(per_model[k][s], claim.metric, Arm(k, template.attribution, template.column), ctx)
                       for k in keys]
        else:
            samples = [samples_of(per_model[a.model][s], claim.metric, a, ctx) for a in claim.arms]
        if any(sm is None for sm in samples):
            reason = "a model the claim rests on was not measured on this metric"
            break
        estimates.append(seed_estimate(claim, samples, x, seed))
    starved = {r.key: why for k in keys for r in per_model[k] if (why := under_trained(r, convergence or {}))}
    row["unchecked"] = [k for k in keys if unchecked(results[k], convergence or {})]
    if not estimates:
        row.update(verdict="not run", reason=reason, estimate=None, ci_low=None, ci_high=None, seeds=0, n=0,
                   paired=False, under_trained=starved)
        return row
    value, ci = combine_seeds(estimates)
    row.update(estimate=value, ci_low=None if ci is None else ci[0], ci_high=None if ci is None else ci[1],
               seeds=len(estimates), n=int(min(e.n for e in estimates)), paired=all(e.paired for e in estimates),
               seed_estimates=[e.value for e in estimates], under_trained=starved,
               verdict=verdict(claim, ci, bool(starved)))
    row["reason"] = _reason(row, claim)
    return row


def _kwarg(r: ModelResult, name: str) -> Any:
    if name in r.entry.kwargs:
        return r.entry.kwargs[name]
    from .core.registry import model_signature
    p = model_signature(r.entry.arch).get(name)
    if p is None:
        raise ClaimError(f"model {r.key} ({r.entry.arch}) has no keyword {name!r} to order a trend by")
    return p.default


def _reason(row: dict[str, Any], claim: Claim) -> str:
    side = ">" if claim.direction == "greater" else "<"
    what = f"paper: {side} {claim.threshold:g}"
    if row["ci_low"] is None:
        what += "; one number per seed and one seed: no interval"
    if row["under_trained"]:
        what += "; under-trained: " + ", ".join(f"{k} ({w})" for k, w in row["under_trained"].items())
    if row.get("unchecked"):
        what += "; training length not checked: " + ", ".join(row["unchecked"])
    return what


def ledger(claims: Iterable[tuple[str, Claim]], results: Mapping[str, ModelResult],
           convergence: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ledger of every claim (``(method name, claim)`` pairs): the verdict counts (what
    ``dvc metrics show`` prints) and the rows."""
    rows = []
    for method, claim in claims:
        rows.append({"method": method, **evaluate_claim(claim, results, convergence)})
    counts = {v.replace(" ", "_").replace("-", "_"): sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    counts["not_run"] = sum(r["verdict"] == "not run" for r in rows)
    for r in rows:
        r["level"] = LEVEL
    return {**counts, "claims": rows}


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    digits = 2 if unit in ("points", "%", "×", "epochs") else 3
    return f"{v:+.{digits}f}"


def claims_table(data: Mapping[str, Any]) -> str:
    """The ledger as a markdown table: claim | paper | ours [95 % CI] | seeds | verdict."""
    lines = ["| claim | paper | ours [95 % CI] | seeds | verdict |", "|---|---|---|---|---|"]
    for r in data["claims"]:
        unit = f" {r['unit']}" if r.get("unit") else ""
        if r.get("estimate") is None:
            ours = "–"
        elif r.get("ci_low") is None:
            ours = f"{_fmt(r['estimate'], r.get('unit', ''))}{unit} (no interval)"
        else:
            ours = (f"{_fmt(r['estimate'], r.get('unit', ''))}{unit} "
                    f"[{_fmt(r['ci_low'], r.get('unit', ''))}, {_fmt(r['ci_high'], r.get('unit', ''))}]")
        v = r["verdict"] if r["verdict"] != "not run" else f"not run ({r.get('reason', '')})"
        v = f"**{v}**" + (" on under-trained models" if r["verdict"] == "reproduced" and r.get("under_trained") else "")
        lines.append(f"| {r.get('short') or r['claim']} | {r['paper_value']} | {ours} | {r.get('seeds', 0)} | {v} |")
    return "\n".join(lines) + "\n"

