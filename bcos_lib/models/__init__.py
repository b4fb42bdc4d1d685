"""Model builders; importing this package registers them (see bcos_lib.registry)."""
from . import cnn  # noqa: F401
from .base import ImageClassifier, prepare_input

__all__ = ["ImageClassifier", "prepare_input"]
