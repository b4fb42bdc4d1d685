"""bcos_lib: B-cos networks and their relatives, as a small library.

Layers (``bcos_lib.layers``), models by name (``create_model``), data, training,
explanations, metrics and figures.  See README.md for the map.

The names below are imported on first use (PEP 562), so that a tool of the package that needs
no torch (``python -m bcos_lib.runner`` checking a cached params.yaml, ``bcos_lib.core.config
--set-profile``) starts without importing it.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_model", "list_models", "register_model", "prepare_input", "ImageClassifier", "__version__"]

_LAZY = {"create_model": ".core.registry", "list_models": ".core.registry", "register_model": ".core.registry",
         "prepare_input": ".models.base", "ImageClassifier": ".models.base", "__version__": ".core.utils"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
