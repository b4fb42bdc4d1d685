"""Model builders; importing this package registers them (see bcos_lib.registry)."""
from . import cnn, resnet, vit  # noqa: F401  (importing registers the builders)
from .base import ImageClassifier, prepare_input

__all__ = ["ImageClassifier", "prepare_input"]
