"""The papers' reported numbers (../shared/SPEC.md), for side-by-side tables and figures."""
from __future__ import annotations

__all__ = ["BCOS_V1_CIFAR10_ACCURACY_BY_B", "BCOS_V2_IMAGENET_ACCURACY", "CODA_CIFAR10_LOCALISATION",
           "BCOSIFICATION_SPEEDUP", "BCOS_V2_FROM_SCRATCH_IMAGENET",
           "CODA_LOCALISATION_BY_T"]

#: B-cos v1, CIFAR-10, 9-layer net with MaxOut (public results notebook): B → top-1 accuracy (%)
BCOS_V1_CIFAR10_ACCURACY_BY_B = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19, 2.25: 92.60, 2.5: 92.37}

#: B-cos v2, ImageNet top-1 (%)
BCOS_V2_IMAGENET_ACCURACY = {"B-cos ResNet-50": 75.9, "B-cos DenseNet-121": 73.6, "B-cos ViT-S": 69.3}

#: CoDA Net, CIFAR-10, 3×3 grid pointing game, T = 1000 (means of the 4500 scores in the public repo)
CODA_CIFAR10_LOCALISATION = {"own": 0.912, "occlusion": 0.842, "gradcam": 0.726, "ig": 0.155, "ixg": 0.144}

#: CoDA Net localisation (own explanation) against the logit temperature T
CODA_LOCALISATION_BY_T = {10: 0.31, 100: 0.64, 500: 0.84, 1000: 0.91}

#: B-cosification (Arya et al., NeurIPS 2024), ImageNet: how many times fewer epochs the B-cosified
#: model needs than the B-cos model trained from scratch to reach the latter's accuracy
BCOSIFICATION_SPEEDUP = {"DenseNet-121": 4.7, "ViT-S": 9.0}

#: B-cos v2 trained from scratch, ImageNet top-1 (%), the accuracies B-cosification aims at
BCOS_V2_FROM_SCRATCH_IMAGENET = {"ResNet-50": 75.88, "DenseNet-121": 73.61, "ViT-B (simple)": 74.41, "ViT-c-B": 77.15}
