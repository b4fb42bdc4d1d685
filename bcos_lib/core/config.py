"""Typed configuration from params.yaml.

Every section is a dataclass; :func:`load_params` rejects an unknown key or a value of
the wrong type with a :class:`ConfigError` that names the key (``train.epochs``) and
what was expected, before a stage writes anything.  A *profile* (``base.profile`` or
the ``profile`` argument) merges ``profiles.<name>`` over the file: ``tiny`` for the
tests, ``default`` for the CPU pipeline, ``gpu`` for the paper-length runs.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "method_options", "metric_options", "Params", "BaseConfig", "DataConfig", "TrainConfig",
           "ModelEntry", "ExplainConfig", "EvaluateConfig", "FiguresConfig", "load_params", "parse_params", "deep_merge",
           "ranged", "field_range", "NAME_PATTERN", "LOSS_NAMES"]


#: the losses ``train.loss`` may name (bcos_lib.train.LOSSES implements each; a test checks they agree)
LOSS_NAMES = ("bce", "ce")


class ConfigError(ValueError):
    """params.yaml has an unknown key, a missing key or a value of the wrong type."""


#: what a model key or a profile name may look like: it becomes part of file names, DVC stage
#: names (``train-<key>``) and the stage commands, so no spaces, quotes or shell characters
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def ranged(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, choices: Any = None, **kw: Any) -> Any:
    """A dataclass field whose value :func:`_build` checks when params.yaml is read: a number
    within ``ge``/``gt`` (≥, >) and ``le``/``lt`` (≤, <) — each element of a list field — or, for
    a string, one of ``choices`` (a tuple, or a function ``value -> bool`` with a ``__doc__``
    that says what is allowed)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"range": bounds} if bounds else {}
    if choices is not None:
        meta["choices"] = choices
    if default is not dataclasses.MISSING:
        kw["default"] = default
    return field(metadata=meta, **kw)


def field_range(cls: type, f: dataclasses.Field) -> dict[str, float]:
    """The declared range of field ``f`` of dataclass ``cls`` ({} when none)."""
    return dict(f.metadata.get("range") or {})


_BOUND_TEXT = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _check_range(value: Any, bounds: dict[str, float], where: str) -> None:
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(v, bounds, f"{where}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    ok = all({"ge": value >= b, "gt": value > b, "le": value <= b, "lt": value < b}[k] for k, b in bounds.items())
    if not ok:
        allowed = " and ".join(f"{_BOUND_TEXT[k]} {b:g}" for k, b in bounds.items())
        raise ConfigError(f"{where} must be {allowed} (got {value!r})")


def _check_choice(value: Any, choices: Any, where: str) -> None:
    """``choices``: a tuple, or a function returning one; an entry ending in ``:N`` stands for
    that prefix followed by a number (``cuda:N``)."""
    if callable(choices):
        choices = choices()
    for c in choices:
        if value == c or (c.endswith(":N") and isinstance(value, str) and value.startswith(c[:-1])
                          and value[len(c) - 1:].isdigit()):
            return
    raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")


_DEVICES = ("auto", "cpu", "cuda", "cuda:N")


@dataclass
class BaseConfig:
    seed: int = ranged(0, ge=0)
    device: str = ranged("auto", choices=lambda: _DEVICES)   # auto | cpu | cuda | cuda:N
    profile: str = "default"    # which entry of `profiles` is merged over the file (NAME_PATTERN)
    num_threads: int = ranged(0, ge=0)   # torch CPU threads; 0 leaves torch's default
    workers: int = ranged(0, ge=0)       # seed replicas run side by side on the CPU, one thread each, this many
                                         # processes at a time; 0: the CPU cores + 1 (bcos_lib.core.members)


@dataclass
class DataConfig:
    dataset: str = ranged("fashion_mnist", choices=("fashion_mnist", "cifar10", "image_folder"))
    root: str = "data/fashion-mnist"
    train_subset: int = ranged(0, ge=0)   # 0 = all images
    test_subset: int = ranged(0, ge=0)
    image_size: int = ranged(32, ge=1)    # image_folder only


@dataclass
class TrainConfig:
    epochs: int = ranged(3, ge=1)
    batch_size: int = ranged(128, ge=1)
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.0, ge=0)
    optimizer: str = ranged("adam", choices=("adam", "sgd"))
    schedule: str = ranged("cosine", choices=("cosine", "constant"))
    warmup_steps: int = ranged(0, ge=0)
    loss: str = ranged("auto", choices=lambda: ("auto", *_losses()))   # auto (the model's default) | bce | ce
    checkpoint_every: int = ranged(100, ge=1)   # steps between resumable checkpoints
    eval_batch_size: int = ranged(1000, ge=1)
    test_every: int = ranged(1, ge=0)   # the test set after every n-th epoch and always after the last (0: the
                                        # last only; the other epochs' history.csv rows leave test_* empty)
    subset: int = ranged(0, ge=0)    # train on this many (seeded) training images only; 0 = all (short sweeps)
    epoch_metrics: list[str] = field(default_factory=list)  # registered metrics run on the test split after every
                                                            # epoch (history.csv columns <metric>_<summary key>)
    channels_last: bool = False      # NHWC memory layout for the training step (bcos_lib.train.fit)
    precision: str = ranged("fp32", choices=("fp32", "bf16"))   # fp32 | bf16: autocast of the training step's forward (weights stay fp32)
    compile: bool = False            # torch.compile the training step's forward (Inductor; cache under .cache/inductor)
    seed: int = ranged(-1, ge=-1)    # the training seed (initialisation, batch order); -1: base.seed. Set per
                                     # replica by a model's `seeds`; the data subset and evaluation keep base.seed


@dataclass
class ModelEntry:
    arch: str = ""                                        # a registered model name (bcos_lib.list_models())
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the builder, checked against its signature
    train: dict[str, Any] = field(default_factory=dict)   # overrides of the train section for this model
    evaluate: dict[str, Any] = field(default_factory=dict)
    group: str = ""                                       # e.g. "b_sweep": a group its method declares (drawn together)
    twin: str = ""                                        # the plain counterpart it is compared with (a key of `models`)
    label: str = ""                                       # how figures and tables name the model
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options (its `options` dataclass)
    init_from: str = ""                                   # start from this trained model (a key of `models`)
    seeds: list[int] = field(default_factory=list)        # training seeds (base.seed among them): one replica
                                                          # <key>_s<seed> per other seed, for the claims ledger
    replica_evaluate: dict[str, Any] = field(default_factory=dict)  # overrides of `evaluate` for the seed replicas
                                                          # only (e.g. just the metrics the claims ledger reads)
    replica_of: str = ""                                  # set on the replicas that `seeds` makes (not by hand)


@dataclass
class ExplainConfig:
    n_images: int = ranged(8, ge=1)
    n_classes_per_image: int = ranged(4, ge=1)   # the "several classes of one image" figure
    smooth: int = ranged(3, ge=1)   # avg-pool kernel of the colour explanation (15 on 224 px ≈ 2–3 on 28 px)
    batch_size: int = ranged(256, ge=1)


@dataclass
class EvaluateConfig:
    grid_size: int = ranged(3, ge=1)
    n_grids: int = ranged(500, ge=1)
    min_confidence: float = ranged(0.5, ge=0, le=1)
    attributions: list[str] = field(default_factory=lambda: ["own", "ixg", "ig", "gradcam", "occlusion", "deeplift"])
    posthoc_n_grids: int = ranged(0, ge=0)   # grids for the post-hoc attributions (0 = n_grids)
    smooth: int = ranged(1, ge=1)   # avg-pool kernel applied to every attribution before scoring
    batch_size: int = ranged(16, ge=1)   # grids per batch
    ig_steps: int = ranged(20, ge=1)
    occlusion_window: int = ranged(7, ge=1)
    occlusion_stride: int = ranged(7, ge=1)
    deletion_images: int = ranged(200, ge=1)
    deletion_steps: int = ranged(20, ge=1)
    deletion_attributions: list[str] = field(default_factory=lambda: ["own", "ixg", "random"])
    metrics: list[str] = field(default_factory=lambda: ["localisation", "deletion"])  # registered metrics to run
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per metric: its own options


@dataclass
class FiguresConfig:
    n_images: int = ranged(8, ge=1)
    dpi: int = ranged(120, ge=1)


@dataclass
class Params:
    base: BaseConfig = field(default_factory=BaseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def model(self, key: str) -> ModelEntry:
        if key not in self.models:
            raise ConfigError(f"no model {key!r} in params.yaml `models`; defined: {', '.join(self.models) or 'none'}")
        return self.models[key]

    def train_config(self, key: str) -> TrainConfig:
        """The train section with the model's own overrides merged in (validated)."""
        merged = deep_merge(dataclasses.asdict(self.train), self.model(key).train)
        return _build(TrainConfig, merged, f"models.{key}.train")

    def evaluate_config(self, key: str) -> EvaluateConfig:
        merged = deep_merge(dataclasses.asdict(self.evaluate), self.model(key).evaluate)
        return _build(EvaluateConfig, merged, f"models.{key}.evaluate")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, dicts recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 2.5e3: YAML 1.1 strings, YAML 1.2 floats


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        (arg,) = typing.get_args(tp)
        return [_check(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r} ({type(value).__name__})")
        _, arg = typing.get_args(tp)
        return {k: _check(v, arg, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is float:
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads `1e-3` as a string; DVC (YAML 1.2) as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'params'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; allowed here: {', '.join(names)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    for f in dataclasses.fields(cls):
        if f.name not in kwargs:
            continue
        at = f"{where}.{f.name}" if where else f.name
        bounds = field_range(cls, f)
        if bounds:
            _check_range(kwargs[f.name], bounds, at)
        elif isinstance(kwargs[f.name], float):
            _check_range(kwargs[f.name], {}, at)   # finite at least
        if f.metadata.get("choices") is not None:
            _check_choice(kwargs[f.name], f.metadata["choices"], at)
    try:
        return cls(**kwargs)
    except ConfigError as e:   # a class's own checks (__post_init__): the message gets the key path
        raise ConfigError(str(e) if not where or str(e).startswith(where) else f"{where}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where or 'params'}: {e}") from None


def _losses() -> tuple[str, ...]:
    return LOSS_NAMES


def _finite_everywhere(value: Any, where: str) -> None:
    """No NaN or infinity anywhere in a free-form mapping (a model's builder arguments)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_everywhere(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_everywhere(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")


def _validate_model(p: Params, key: str, entry: ModelEntry, evaluate: bool = True) -> None:
    """A model entry against the registries: its arch, kwargs, method options, start model,
    and the attributions and metrics (with their options) it is evaluated with."""
    from .registry import ATTRIBUTIONS
    from .registry import get_metric, list_metrics, method_of
    from .registry import list_models, model_signature
    try:
        accepted = model_signature(entry.arch)   # imports that model's method only
    except KeyError:
        raise ConfigError(f"models.{key}.arch: unknown model {entry.arch!r}; known models: "
                          f"{', '.join(list_models())}") from None
    _finite_everywhere(entry.kwargs, f"models.{key}.kwargs")   # the builder checks ranges; NaN/inf never make sense
    for k in entry.kwargs:
        if k not in accepted:
            raise ConfigError(f"models.{key}.kwargs.{k}: {entry.arch} has no argument {k!r}; it accepts: "
                              f"{', '.join(accepted)}")
    method_of(entry.arch)
    method_options(entry, key)
    if entry.group:
        from .registry import all_groups
        groups = all_groups()
        if entry.group not in groups:
            raise ConfigError(f"models.{key}.group: unknown group {entry.group!r}; the methods declare: "
                              f"{', '.join(f'{g} ({m})' for g, m in sorted(groups.items()))} (a method's manifest, "
                              f"bcos_lib/methods/<paper>/__init__.py, lists its groups)")
    if entry.twin:
        if entry.twin not in p.models or entry.twin == key:
            raise ConfigError(f"models.{key}.twin: {entry.twin!r} is not another key of `models` "
                              f"(defined: {', '.join(k for k in p.models if k != key)})")
    if entry.init_from:
        if entry.init_from not in p.models:
            raise ConfigError(f"models.{key}.init_from: {entry.init_from!r} is not a key of `models` "
                              f"(defined: {', '.join(p.models)})")
        seen, k = [key], entry.init_from
        while k:
            if k in seen:
                raise ConfigError(f"models.{key}.init_from: the chain {' → '.join(seen + [k])} is a cycle")
            seen.append(k)
            k = p.models[k].init_from if k in p.models else ""
    tcfg = p.train_config(key)  # overrides must be valid keys of their sections
    for m in tcfg.epoch_metrics:
        if m not in list_metrics():
            where_t = f"models.{key}.train" if "epoch_metrics" in entry.train else "train"
            raise ConfigError(f"{where_t}.epoch_metrics: unknown metric {m!r}; registered: {', '.join(list_metrics())}")
    cfg = p.evaluate_config(key)
    if not evaluate:   # a stage that runs this model's training: its evaluate stage checks the rest
        return
    where = f"models.{key}.evaluate" if entry.evaluate else "evaluate"
    known = list(ATTRIBUTIONS)
    for field_name in ("attributions", "deletion_attributions"):
        extra = ("random",) if field_name == "deletion_attributions" else ()
        for m in getattr(cfg, field_name):
            if m not in known and m not in extra:
                raise ConfigError(f"{where}.{field_name}: unknown attribution {m!r}; known: "
                                  f"{', '.join(known + list(extra))}")
    for m in cfg.metrics:
        if m not in list_metrics():
            raise ConfigError(f"{where}.metrics: unknown metric {m!r}; registered: {', '.join(list_metrics())}")
    for m in cfg.options:
        if m not in list_metrics():
            raise ConfigError(f"{where}.options.{m}: no metric of that name; registered: {', '.join(list_metrics())}")
        get_metric(m)
        metric_options(m, cfg, where)


def _expand_seeds(p: Params) -> Params:
    """Add a replica ``<key>_s<seed>`` after every entry with ``seeds``, one per seed other than
    ``base.seed`` (which the entry itself trains with): the same entry with ``train.seed`` set,
    starting from (``init_from``) and compared with (``twin``) the replica of the same seed where
    that model has one.  Only the training seed changes: data subsets, grids and every evaluation
    draw keep ``base.seed``, so replicas are scored on the same samples (paired)."""
    if not any(e.seeds or e.replica_of for e in p.models.values()):
        return p
    out: dict[str, ModelEntry] = {}
    for key, e in p.models.items():
        if e.replica_of:
            raise ConfigError(f"models.{key}.replica_of: set by `seeds` on the model it replicates, not by hand")
        out[key] = e
        if e.replica_evaluate and not e.seeds:
            raise ConfigError(f"models.{key}.replica_evaluate: the entry has no `seeds`, so no replica to apply it to")
        if not e.seeds:
            continue
        if len(set(e.seeds)) != len(e.seeds) or any((not isinstance(s, int)) or s < 0 for s in e.seeds):
            raise ConfigError(f"models.{key}.seeds: expected distinct integers ≥ 0 (got {e.seeds})")
        if p.base.seed not in e.seeds:
            raise ConfigError(f"models.{key}.seeds: {e.seeds} must contain base.seed ({p.base.seed}), the seed "
                              f"`{key}` itself trains with; the others become replicas {key}_s<seed>")
        for s in e.seeds:
            if s == p.base.seed:
                continue
            rkey = f"{key}_s{s}"
            if rkey in p.models:
                raise ConfigError(f"models.{key}.seeds: the replica key {rkey!r} is already a key of `models`")

            def same_seed(other: str) -> str:
                return f"{other}_s{s}" if other and s in p.models[other].seeds else other if other in p.models else other
            out[rkey] = dataclasses.replace(e, seeds=[], replica_of=key, train={**e.train, "seed": s},
                                            evaluate={**e.evaluate, **e.replica_evaluate}, replica_evaluate={},
                                            label=f"{e.label or key} (seed {s})", init_from=same_seed(e.init_from),
                                            twin=same_seed(e.twin))
    p.models = out
    return p


def _validate(p: Params, models: list[str] | None = None) -> None:
    """Check ``p`` against the registries: every model entry, and the section's own metric options
    (``models``: only these entries, and only what training them needs: see :func:`parse_params`)."""
    from .registry import get_metric, list_metrics
    for key in models or []:
        p.model(key)  # an unknown key is named with the known ones
    if models is None:
        for m in p.evaluate.options:   # the section's own metric options, named as written (evaluate.options.<metric>)
            if m not in list_metrics():
                raise ConfigError(f"evaluate.options.{m}: no metric of that name; registered: {', '.join(list_metrics())}")
            get_metric(m)
            metric_options(m, p.evaluate, "evaluate")
    for key, entry in p.models.items():
        if models is None or key in models:
            _validate_model(p, key, entry, evaluate=models is None)


def _known_models_only(raw: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A profile's overrides, without those of models that params.yaml does not define
    (a profile is generic; overriding a model would otherwise create a half-defined entry)."""
    if not isinstance(over, dict) or not isinstance(over.get("models"), dict):
        return over
    defined = raw.get("models") or {}
    return {**over, "models": {k: v for k, v in over["models"].items() if k in defined}}


def _check_names(raw: dict[str, Any], profiles: dict[str, Any], name: Any) -> None:
    """Model keys and profile names must match :data:`NAME_PATTERN`: they become file names,
    DVC stage names and words of the stage commands."""
    rule = "use letters, digits and _ only, starting with a letter"
    models = raw.get("models")
    for key in (models if isinstance(models, dict) else {}):
        if not isinstance(key, str) or not NAME_PATTERN.fullmatch(key):
            raise ConfigError(f"models: the model key {key!r} is not allowed as a name ({rule}, e.g. my_cnn_2); "
                              "it names the model's files and stages")
    for pname in profiles:
        if not isinstance(pname, str) or not NAME_PATTERN.fullmatch(pname):
            raise ConfigError(f"profiles: the profile name {pname!r} is not allowed ({rule}, e.g. quick_gpu)")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"base.profile: {name!r} is not a profile name ({rule}); defined in `profiles`: "
                          f"default, {', '.join(p for p in profiles if p != 'default') or '(none)'}")


def parse_params(raw: dict[str, Any], profile: str | None = None, models: list[str] | None = None) -> Params:
    """Validate a params mapping and apply ``profile`` (default: ``base.profile``).

    The file itself is checked first (an error names the key, e.g. ``models.std_cnn.train.lr``),
    then each profile merged over it (an error names the profile as well, ``profiles.tiny``):
    every type, range and choice at every level — sections, each model's overrides, its
    method's options and each metric's options — so that no profile can fail later, in a stage.

    ``models`` (a stage that runs these models): the active profile only, and of the registries
    only what training those entries needs, so that the stage imports their methods and no other
    (the runner and the ``settings`` stage check the whole file once per run, before any stage)."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of sections (base, data, train, models, …)")
    raw = copy.deepcopy(raw)
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError("profiles: expected a mapping of profile name → overrides")
    name = profile or (raw.get("base") or {}).get("profile", "default")
    _check_names(raw, profiles, name)
    if name != "default" and name not in profiles:   # `default` needs no entry; an entry is merged like any other
        others = [p for p in profiles if p != "default"]
        raise ConfigError(f"unknown profile {name!r}; defined in `profiles`: "
                          f"default, {', '.join(others) or '(none)'}")
    if models is not None:   # a stage: the active profile, the entries it runs
        merged = deep_merge(raw, _known_models_only(raw, profiles.get(name) or {}))
        merged.setdefault("base", {})["profile"] = name
        try:
            view = _expand_seeds(_build(Params, merged, ""))
        except ConfigError as e:
            raise ConfigError(f"in profile {name!r} (profiles.{name}): {e}") from None
        _validate(view, models)
        return view
    _validate(_expand_seeds(_build(Params, raw, "")))   # the file itself, also where a profile overrides it
    params = None
    for pname in dict.fromkeys([name, *profiles]):   # the active profile first, then every other one
        merged = deep_merge(raw, _known_models_only(raw, profiles.get(pname) or {}))
        merged.setdefault("base", {})["profile"] = pname
        try:
            view = _expand_seeds(_build(Params, merged, ""))
            _validate(view)
        except ConfigError as e:
            raise ConfigError(f"in profile {pname!r} (profiles.{pname}): {e}") from None
        if pname == name:
            params = view
    assert params is not None
    return params


def load_params(path: str | os.PathLike | None = None, profile: str | None = None,
                models: list[str] | None = None) -> Params:
    """Read, validate and profile-merge params.yaml (default: the project's); ``models``: see
    :func:`parse_params`."""
    from .paths import project_root
    path = Path(path) if path is not None else project_root() / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    try:
        return parse_params(raw, profile, models)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


_BASE_BLOCK = re.compile(r"^base:[ \t]*(#[^\n]*)?\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", re.M)
_PROFILE_LINE = re.compile(r"^([ \t]+profile:[ \t]*)([^#\n]*?)([ \t]*(?:#[^\n]*)?)$", re.M)


def set_profile(path: str | os.PathLike, name: str) -> bool:
    """Set ``base.profile: <name>`` in the params file at ``path``, changing that line only
    (comments and layout stay).  The file with the new profile is validated first: an unknown
    profile or any other mistake raises :class:`ConfigError` and leaves the file as it was.
    Returns whether the file changed."""
    path = Path(path)
    load_params(path, name)  # the file and the profile must be valid before anything is written
    text = path.read_text()
    raw = yaml.safe_load(text)
    if (raw.get("base") or {}).get("profile", "default") == name and "profile" in (raw.get("base") or {}):
        return False
    block = _BASE_BLOCK.search(text)
    if block is None:
        new = f"base:\n  profile: {name}\n" + text
    else:
        body = block.group(2)
        line = _PROFILE_LINE.search(body)
        if line is not None:
            body = body[:line.start(2)] + name + body[line.end(2):]
        else:
            indent = re.match(r"[ \t]+", body).group(0) if body.strip() else "  "
            body = f"{indent}profile: {name}\n" + body
        new = text[:block.start(2)] + body + text[block.end(2):]
    expected = copy.deepcopy(raw)
    expected.setdefault("base", {})["profile"] = name
    if yaml.safe_load(new) != expected:  # a layout this simple edit does not understand
        raise ConfigError(f"{path}: could not set base.profile without rewriting the file; "
                          f"edit `profile:` under `base:` by hand")
    from .utils import atomic_write
    atomic_write(path, lambda tmp: Path(tmp).write_text(new))
    return True


# ----------------------------------------------------------------------------- method and metric options
def _build_options(cls: type | None, raw: Any, where: str) -> Any:
    if cls is None:
        if raw:
            raise ConfigError(f"{where}: this model takes no options (got {', '.join(raw)})")
        return None
    return _build(cls, dict(raw or {}), where)


def method_options(entry: ModelEntry, key: str = "?") -> Any:
    """The validated ``models.<key>.options`` of ``entry`` (an instance of its method's ``OPTIONS``)."""
    from .registry import method_of
    return _build_options(method_of(entry.arch).load("model").options, entry.options, f"models.{key}.options")


def metric_options(name: str, cfg: EvaluateConfig, where: str = "evaluate") -> Any:
    """The validated ``evaluate.options.<name>`` (an instance of the metric's options dataclass)."""
    from .registry import get_metric
    return _build_options(get_metric(name).options, cfg.options.get(name), f"{where}.options.{name}")


def main(argv: list[str] | None = None) -> int:
    """``python -m bcos_lib.core.config [--profile NAME]``: validate params.yaml;
    ``python -m bcos_lib.core.config --set-profile NAME``: validate, then set ``base.profile``."""
    import argparse
    import sys

    from .paths import display_path, project_root

    ap = argparse.ArgumentParser(prog="python -m bcos_lib.core.config", description=main.__doc__)
    ap.add_argument("--params", help="the params file (default: the project's params.yaml)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--profile", help="validate with this profile instead of base.profile")
    group.add_argument("--set-profile", metavar="NAME", help="set base.profile to NAME (validated first)")
    args = ap.parse_args(argv)
    path = Path(display_path(Path(args.params) if args.params else project_root() / "params.yaml"))
    try:
        if args.set_profile:
            changed = set_profile(path, args.set_profile)
            print(f"{path}: base.profile is {args.set_profile}" + ("" if changed else " (unchanged)"))
        else:
            p = load_params(path, args.profile)
            print(f"{path}: valid (profile {p.base.profile}, models: {', '.join(p.models) or 'none'})")
    except ConfigError as e:
        print(f"error: {' '.join(str(e).split())} (nothing was changed: fix it and run again)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
