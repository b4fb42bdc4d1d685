"""Every number of params.yaml is checked for type and range when the file is read.

The fields are found, not listed: the sections of :class:`bcos_lib.core.config.Params`, the option
dataclasses of every registered method and metric.  Each numeric field must declare its range
(``bcos_lib.core.config.ranged``), and a value just outside it, put at every level
where the field can be written — the section, a profile, a model's overrides, a model's method
options, a metric's options — must stop the reading with one ConfigError that names the key path.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from bcos_lib.core.config import (
    BaseConfig,
    ConfigError,
    DataConfig,
    EvaluateConfig,
    ExplainConfig,
    FiguresConfig,
    TrainConfig,
    field_range,
    parse_params,
)
from bcos_lib.core.registry import get_metric, list_methods, list_metrics, method_of

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "params.yaml").read_text())
SECTIONS = {"base": BaseConfig, "data": DataConfig, "train": TrainConfig, "explain": ExplainConfig,
            "evaluate": EvaluateConfig, "figures": FiguresConfig}
NUMERIC = (int, float, list[int], list[float])


def numeric_fields(cls: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if hints[f.name] in NUMERIC]


def option_classes() -> dict[str, type]:
    """Every options dataclass the registries know, by where it is written."""
    out = {}
    for m in list_methods():
        m.load("model")
        if m.options is not None:
            out[f"method {m.name}"] = m.options
    for name in list_metrics():
        if get_metric(name).options is not None:
            out[f"metric {name}"] = get_metric(name).options
    return out


def outside(cls: type, f: dataclasses.Field) -> float:
    """A value just outside the declared range of ``f``."""
    bounds = field_range(cls, f)
    is_int = typing.get_type_hints(cls)[f.name] in (int, list[int])
    if "ge" in bounds:
        return bounds["ge"] - (1 if is_int else 0.5)
    if "gt" in bounds:
        return bounds["gt"]
    if "le" in bounds:
        return bounds["le"] + (1 if is_int else 0.5)
    return bounds["lt"]


def model_of_method(method_name: str) -> str:
    """A model of params.yaml that belongs to the method (its options are written there)."""
    return next(k for k, e in RAW["models"].items() if method_of(e["arch"]).name == method_name)


def put(raw: dict, path: tuple[str, ...], value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = value
    return raw


def cases() -> list[tuple[str, tuple[str, ...], object, str]]:
    """(id, where in params.yaml, the bad value, the key path the message must name)."""
    out = []
    for sec, cls in SECTIONS.items():
        for f in numeric_fields(cls):
            v = outside(cls, f) if field_range(cls, f) else None
            if typing.get_type_hints(cls)[f.name] in (list[int], list[float]):
                v = [v]
            out.append((f"{sec}.{f.name}", (sec, f.name), v, f"{sec}.{f.name}"))
            out.append((f"profiles.tiny.{sec}.{f.name}", ("profiles", "tiny", sec, f.name), v, f"{sec}.{f.name}"))
    for sec, cls in (("train", TrainConfig), ("evaluate", EvaluateConfig)):
        for f in numeric_fields(cls):
            v = outside(cls, f) if field_range(cls, f) else None
            out.append((f"models.std_cnn.{sec}.{f.name}", ("models", "std_cnn", sec, f.name), v,
                        f"models.std_cnn.{sec}.{f.name}"))
    for where, cls in option_classes().items():
        kind, name = where.split(" ", 1)
        for f in numeric_fields(cls):
            v = outside(cls, f) if field_range(cls, f) else None
            if typing.get_type_hints(cls)[f.name] in (list[int], list[float]):
                v = [v]
            if kind == "method":
                key = model_of_method(name)
                path = ("models", key, "options", f.name)
            else:
                path = ("evaluate", "options", name, f.name)
            out.append((".".join(path), path, v, ".".join(path)))
    return out


CASES = cases()


def test_every_numeric_field_declares_its_range():
    missing = [f"{cls.__name__}.{f.name}" for cls in [*SECTIONS.values(), *option_classes().values()]
               for f in numeric_fields(cls) if not field_range(cls, f)]
    assert not missing, f"numeric fields without a declared range (bcos_lib.core.config.ranged): {missing}"


def test_the_project_params_are_within_range():
    for profile in ("default", *RAW["profiles"]):
        parse_params(RAW, profile)


@pytest.mark.parametrize("case_id, path, value, key", CASES, ids=[c[0] for c in CASES])
def test_out_of_range_value_is_named(case_id, path, value, key):
    raw = put(RAW, path, value)
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    message = str(e.value)
    assert key in message, message
    assert "\n" not in message
    if path[0] == "profiles":
        assert f"profiles.{path[1]}" in message, message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match=r"train\.weight_decay: expected a finite number"):
        parse_params(put(RAW, ("train", "weight_decay"), value))
