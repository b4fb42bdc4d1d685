"""Models by name.

A model builder is a function decorated with ``@register_model``; ``create_model(name,
**kwargs)`` builds it and rejects unknown names (listing the known ones) and unknown
keyword arguments (listing the accepted ones), so a typo in params.yaml fails loudly.
Every registered model is swept by the generic tests in tests/test_models.py.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_signature"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name."""
    if fn.__name__ in _MODELS:
        raise KeyError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing registers the shared architectures' builders)
    from .methods import load_methods
    load_methods()  # each method file registers its own builders


def list_models() -> list[str]:
    """The names of all registered models, sorted."""
    _ensure_loaded()
    return sorted(_MODELS)


def model_signature(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments that model ``name`` accepts."""
    _ensure_loaded()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return dict(inspect.signature(_MODELS[name]).parameters)


def create_model(name: str, **kwargs: Any) -> nn.Module:
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
