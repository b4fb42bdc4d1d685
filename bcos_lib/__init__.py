"""bcos_lib: B-cos networks and their relatives, as a small library.

Layers (``bcos_lib.layers``), models by name (``create_model``), data, training,
explanations, metrics and figures.  See README.md for the map.
"""
from .models.base import ImageClassifier, prepare_input
from .registry import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "prepare_input", "ImageClassifier", "__version__"]
