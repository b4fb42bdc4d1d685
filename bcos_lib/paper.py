"""The papers' reported numbers, for side-by-side tables and figures.

Each method file of :mod:`bcos_lib.methods` reads its paper's numbers from here; a block per paper.
"""
from __future__ import annotations

__all__ = ["BCOS_V1_CIFAR10_ACCURACY_BY_B", "CODA_CIFAR10_LOCALISATION", "BCOS_V2_IMAGENET_ACCURACY"]

#: B-cos v1 (CVPR 2022), CIFAR-10, 9-layer net with MaxOut (the authors' public results notebook):
#: B → top-1 accuracy (%)
BCOS_V1_CIFAR10_ACCURACY_BY_B = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19, 2.25: 92.60, 2.5: 92.37}

#: CoDA Nets (CVPR 2021) §5.1, CIFAR-10, 3×3 grid pointing game, T = 1000 (means of the 4500
#: scores in the authors' public repository)
CODA_CIFAR10_LOCALISATION = {"own": 0.912, "occlusion": 0.842, "gradcam": 0.726, "ig": 0.155, "ixg": 0.144}

#: B-cos v2 (TPAMI 2024), ImageNet top-1 accuracy (%) of B-cos networks trained from scratch
BCOS_V2_IMAGENET_ACCURACY = {"resnet50": 75.9, "densenet121": 73.6, "vit_s": 69.3}
