"""The papers' reported numbers (../shared/SPEC.md), for side-by-side tables and figures."""
from __future__ import annotations

__all__ = ["BCOS_V1_CIFAR10_ACCURACY_BY_B", "BCOS_V2_IMAGENET_ACCURACY", "CODA_CIFAR10_LOCALISATION",
           "CODA_LOCALISATION_BY_T", "DISCOVER_DENSITY", "DISCOVER_IMAGENET_ACCURACY"]

#: B-cos v1, CIFAR-10, 9-layer net with MaxOut (public results notebook): B → top-1 accuracy (%)
BCOS_V1_CIFAR10_ACCURACY_BY_B = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19, 2.25: 92.60, 2.5: 92.37}

#: B-cos v2, ImageNet top-1 (%)
BCOS_V2_IMAGENET_ACCURACY = {"B-cos ResNet-50": 75.9, "B-cos DenseNet-121": 73.6, "B-cos ViT-S": 69.3}

#: CoDA Net, CIFAR-10, 3×3 grid pointing game, T = 1000 (means of the 4500 scores in the public repo)
CODA_CIFAR10_LOCALISATION = {"own": 0.912, "occlusion": 0.842, "gradcam": 0.726, "ig": 0.155, "ixg": 0.144}

#: CoDA Net localisation (own explanation) against the logit temperature T
CODA_LOCALISATION_BY_T = {10: 0.31, 100: 0.64, 500: 0.84, 1000: 0.91}

#: DISCOVER (Panousis & Chatzis, NeurIPS 2023): the share of active units with U = 24 competitors
#: per block (one winner per block: 1/24 ≈ 4 %), the paper's sparsity claim
DISCOVER_DENSITY = 1 / 24

#: DISCOVER, ImageNet top-1 (%) of the LWTA DeiTs (the public code's table)
DISCOVER_IMAGENET_ACCURACY = {"DeiT-T/8": 77.0, "DeiT-S/12": 72.5}
