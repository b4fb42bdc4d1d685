"""Layer families, one per file: B-cos conv/linear, uncentred norms, the logit layer,
input encodings and the explanation-mode switch."""
from .bcos import BcosConv2d, BcosLinear, patch_norm
from .encoding import AddInverse, Normalize, add_inverse, check_encoded_input
from .explanation_mode import ExplainableModule, explanation_mode, is_explainable
from .logit import LogitLayer, default_logit_bias
from .norms import UncentredBatchNorm2d, UncentredLayerNorm

__all__ = ["BcosConv2d", "BcosLinear", "patch_norm", "AddInverse", "Normalize", "add_inverse",
           "check_encoded_input", "ExplainableModule", "explanation_mode", "is_explainable",
           "LogitLayer", "default_logit_bias", "UncentredBatchNorm2d", "UncentredLayerNorm"]
