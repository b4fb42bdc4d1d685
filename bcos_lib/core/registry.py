"""Models, methods and metrics by name.

* **Models.** A builder is a function decorated with ``@register_model``; ``create_model(name,
  **kwargs)`` builds it and rejects unknown names (listing the known ones) and unknown keyword
  arguments (listing the accepted ones), so a typo in params.yaml fails loudly.
* **Methods.** Each paper is a package ``bcos_lib/methods/<paper>/`` whose ``__init__.py``
  declares ``METHOD = MethodSpec(...)`` (:mod:`bcos_lib.core.contract`).  The registry reads these
  manifests (cheap: they import nothing heavy) and imports a method's ``model``, ``metrics`` or
  ``present`` side only when it is asked for, by explicit import: building a CoDA net imports
  ``methods/coda/model.py``, not DISCOVER's code.
* **Metrics.** A metric is registered by the module that defines it (``register_metric``); the
  registry imports that module when the metric is asked for by name: the shared metrics'
  modules are listed in :data:`SHARED_METRICS`, a method's in its manifest's ``metrics``.

Nothing here imports the configuration: :mod:`bcos_lib.core.config` reads the registries to
validate params.yaml, never the other way round.  Every registered model is swept by the
generic tests in tests/test_models.py.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .contract import Method, MethodSpec, Metric

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_signature", "register_method", "list_methods",
           "get_method", "method_of", "method_of_group", "all_groups", "register_metric", "get_metric", "list_metrics",
           "metric_module", "SHARED_METRICS", "ATTRIBUTIONS", "METHODS_PACKAGE"]

METHODS_PACKAGE = "bcos_lib.methods"
#: the metrics of the shared evaluation code, by the module that registers each
SHARED_METRICS = {"localisation": "bcos_lib.metrics", "deletion": "bcos_lib.metrics",
                  "paired_localisation": "bcos_lib.metrics",
                  "insertion": "bcos_lib.faithfulness", "road": "bcos_lib.faithfulness",
                  "faithfulness_correlation": "bcos_lib.faithfulness"}

#: the attributions (bcos_lib.explain registers each under one of these names; params.yaml
#: is checked against this list, so that checking it does not import the attribution code)
ATTRIBUTIONS = ("own", "ixg", "ig", "gradcam", "occlusion", "deeplift", "guided_backprop")

_MODELS: dict[str, Callable[..., "nn.Module"]] = {}
_METHODS: dict[str, Method] = {}
_ARCH_TO_METHOD: dict[str, str] = {}
_METRICS: dict[str, Metric] = {}
_METRIC_MODULES: dict[str, str] = {}   # metric name → module that registers it (methods defined in code: "")
_DISCOVERED = False


# ----------------------------------------------------------------------------- methods
def _add_method(method: Method) -> Method:
    if method.name in _METHODS:
        raise KeyError(f"method {method.name!r} is registered twice")
    for arch in method.models:
        if arch in _ARCH_TO_METHOD:
            raise KeyError(f"model {arch!r} is claimed by the methods {_ARCH_TO_METHOD[arch]!r} and {method.name!r}")
    own = f"{method.package}.metrics" if method.package else ""
    for name in method.metrics:
        if name in SHARED_METRICS or _METRIC_MODULES.get(name, own) != own:
            raise KeyError(f"metric {name!r} is declared by two methods (or shadows a shared metric)")
    if method.options is not None:
        import dataclasses
        if not dataclasses.is_dataclass(method.options):
            raise TypeError(f"method {method.name!r}: options must be a dataclass")
    _METHODS[method.name] = method
    for arch in method.models:
        _ARCH_TO_METHOD[arch] = method.name
    for name in method.metrics:
        _METRIC_MODULES[name] = f"{method.package}.metrics" if method.package else ""
    return method


def _discover() -> None:
    """Read the manifest of every package under ``bcos_lib/methods/`` (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(METHODS_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        name = f"{METHODS_PACKAGE}.{info.name}"
        spec = getattr(importlib.import_module(name), "METHOD", None)
        if not isinstance(spec, MethodSpec):
            raise TypeError(f"{name}: a method package declares METHOD = MethodSpec(...) in its __init__.py")
        _add_method(Method.from_spec(spec, name))


def register_method(method: Method) -> Method:
    """Register a method defined in code (a test, a notebook); the papers' methods are packages."""
    import sys
    _discover()
    if not method.module:
        method.module = sys._getframe(1).f_globals.get("__name__", "")
    return _add_method(method)


def list_methods() -> list[Method]:
    _discover()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def get_method(name: str) -> Method:
    """The method ``name`` with every side loaded (for notebooks and tools; a stage loads the side it
    needs with ``Method.load``)."""
    _discover()
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_METHODS))}")
    return _METHODS[name].load("model").load("metrics").load("present")


def method_of(arch: str) -> Method:
    """The method a model builder belongs to (its manifest; no side is imported)."""
    _discover()
    if arch not in _ARCH_TO_METHOD:
        raise KeyError(f"model {arch!r} belongs to no method: list it in the `models` of its method's manifest "
                       f"(bcos_lib/methods/<paper>/__init__.py)")
    return _METHODS[_ARCH_TO_METHOD[arch]]


def all_groups() -> dict[str, str]:
    """Every declared group → the method that declares it."""
    _discover()
    out: dict[str, str] = {}
    for m in _METHODS.values():
        for g in m.groups:
            if g in out and out[g] != m.name:
                raise KeyError(f"group {g!r} is declared by the methods {out[g]!r} and {m.name!r}")
            out[g] = m.name
    return out


def method_of_group(group: str) -> Method:
    groups = all_groups()
    if group not in groups:
        raise KeyError(f"unknown group {group!r}; declared: {', '.join(sorted(groups))}")
    return _METHODS[groups[group]]


# ----------------------------------------------------------------------------- models
def register_model(fn: Callable[..., "nn.Module"]) -> Callable[..., "nn.Module"]:
    """Register ``fn`` under its own name."""
    if fn.__name__ in _MODELS and _MODELS[fn.__name__] is not fn:
        raise KeyError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def _builder(name: str) -> Callable[..., "nn.Module"]:
    if name not in _MODELS:
        try:
            method = method_of(name)
        except KeyError:
            raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None
        method.load("model")   # importing the model side registers its builders
        if name not in _MODELS:
            raise KeyError(f"model {name!r} is listed by the method {method.name!r} but its model.py defines "
                           f"no @register_model builder of that name")
    return _MODELS[name]


def list_models() -> list[str]:
    """The names of all registered models, sorted (imports every method's model side)."""
    for m in list_methods():
        m.load("model")
    return sorted(set(_MODELS) | set(_ARCH_TO_METHOD))


def model_signature(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments that model ``name`` accepts."""
    return dict(inspect.signature(_builder(name)).parameters)


def create_model(name: str, **kwargs: Any) -> "nn.Module":
    """Build the registered model ``name`` with ``kwargs``.

    The returned module records ``model_name`` and ``model_kwargs`` so that a checkpoint
    can rebuild it.
    """
    params = model_signature(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"model {name!r} got unknown argument(s) {unknown}; it accepts: {', '.join(params)}")
    model = _MODELS[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


# ----------------------------------------------------------------------------- metrics
def register_metric(metric: Metric) -> Metric:
    """Register ``metric`` (called by the module that defines it, when the registry imports it).
    A name that another module registers, or that a manifest or :data:`SHARED_METRICS` gives to
    another module, is refused."""
    import sys
    if not metric.module:
        metric.module = sys._getframe(1).f_globals.get("__name__", "")
    _discover()
    owner = SHARED_METRICS.get(metric.name) or _METRIC_MODULES.get(metric.name)
    if (metric.name in _METRICS and _METRICS[metric.name].fn is not metric.fn) or (owner and owner != metric.module):
        raise KeyError(f"metric {metric.name!r} is registered twice ({owner or _METRICS[metric.name].module} "
                       f"and {metric.module})")
    _METRICS[metric.name] = metric
    _METRIC_MODULES.setdefault(metric.name, metric.module)
    return metric


def metric_module(name: str) -> str:
    """The module that registers metric ``name`` (without importing it)."""
    _discover()
    if name in SHARED_METRICS:
        return SHARED_METRICS[name]
    if name in _METRIC_MODULES and _METRIC_MODULES[name]:
        return _METRIC_MODULES[name]
    if name in _METRICS:
        return _METRICS[name].module
    raise KeyError(f"unknown metric {name!r}; registered: {', '.join(list_metrics())}")


def list_metrics() -> list[str]:
    """Every metric name: the shared ones, those the methods declare and those registered in code."""
    _discover()
    return sorted(set(SHARED_METRICS) | set(_METRIC_MODULES) | set(_METRICS))


def get_metric(name: str) -> Metric:
    if name not in _METRICS:
        module = metric_module(name)
        if module:
            importlib.import_module(module)
        if name not in _METRICS:
            raise KeyError(f"metric {name!r} is declared but {module or 'no module'} registers none of that name")
    return _METRICS[name]


def package_dir() -> Path:
    """The folder of the method packages."""
    return Path(importlib.import_module(METHODS_PACKAGE).__path__[0])
