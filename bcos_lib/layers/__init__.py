"""Layer families, one per file: B-cos conv/linear, B-cos attention, uncentred norms, the
logit layer, input encodings, the explanation-mode switch, class-specific gates, and the
layers of B-cosified networks (``bcosified``).  ``reference`` holds slow float64 references of the fast layers
(for the tests)."""
from .attention import BcosAttention, attention_weights
from .bcos import BcosConv2d, BcosLinear, patch_norm, v1_cifar_layer_scale, v1_layer_scale
from .csg import ClassSpecificGate, class_gates, gate_labels
from .encoding import Normalize, add_inverse, check_encoded_input
from .explanation_mode import ExplainableModule, explanation_mode, is_explainable
from .logit import LogitLayer, default_logit_bias, v1_logit_temperature
from .norms import UncentredBatchNorm2d, UncentredLayerNorm
from .bcosified import (BcosifiedAttention, BcosifiedConv2d, BcosifiedLinear, DetachedLayerNorm, DynamicGELU,
                        FoldedBatchNorm2d)

__all__ = ["BcosConv2d", "BcosLinear", "patch_norm", "v1_layer_scale", "v1_cifar_layer_scale", "BcosAttention",
           "attention_weights", "ClassSpecificGate", "class_gates", "gate_labels", "Normalize", "add_inverse",
           "check_encoded_input",
           "ExplainableModule", "explanation_mode", "is_explainable", "LogitLayer", "default_logit_bias",
           "v1_logit_temperature", "UncentredBatchNorm2d", "UncentredLayerNorm", "BcosifiedConv2d", "BcosifiedLinear",
           "FoldedBatchNorm2d", "DetachedLayerNorm", "DynamicGELU", "BcosifiedAttention"]
