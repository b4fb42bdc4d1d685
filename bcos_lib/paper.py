"""The papers' reported numbers, for side-by-side tables and figures.

Each method file of :mod:`bcos_lib.methods` reads its paper's numbers from here; a block per paper.
"""
from __future__ import annotations

__all__ = ["BCOS_V1_CIFAR10_ACCURACY_BY_B", "CODA_CIFAR10_LOCALISATION", "CODA_LOCALISATION_BY_T", "CSG_DEFAULTS",
           "CSG_CLAIMS",
           "BCOSIFICATION_SPEEDUP", "BCOS_V2_FROM_SCRATCH_IMAGENET", "DISCOVER_DENSITY", "DISCOVER_IMAGENET_ACCURACY",
           "BCOS_V2_IMAGENET_ACCURACY"]

#: B-cos v1 (CVPR 2022), CIFAR-10, 9-layer net with MaxOut (the authors' public results notebook):
#: B → top-1 accuracy (%)
BCOS_V1_CIFAR10_ACCURACY_BY_B = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19, 2.25: 92.60, 2.5: 92.37}

#: CoDA Nets (CVPR 2021) §5.1, CIFAR-10, 3×3 grid pointing game, T = 1000 (means of the 4500
#: scores in the authors' public repository)
CODA_CIFAR10_LOCALISATION = {"own": 0.912, "occlusion": 0.842, "gradcam": 0.726, "ig": 0.155, "ixg": 0.144}

#: CoDA Nets (CVPR 2021) §5, CIFAR-10: localisation of the own explanation (3×3 grid pointing
#: game) against the logit temperature T
CODA_LOCALISATION_BY_T = {10: 0.31, 100: 0.64, 500: 0.84, 1000: 0.91}
#: CSG (Liang et al., ECCV 2020): the defaults of the method (§3.3) and its claims, as stated
#: (qualitative: the numbers are for CIFAR-10 / ImageNet / VOC networks, not comparable here)
CSG_DEFAULTS = {"gate_init": 0.5, "sparsity_weight": 1e-3, "density": 0.2}
CSG_CLAIMS = (
    "accuracy comparable to standard training of the same network",
    "a much higher mutual-information score (MIS): each last-layer filter serves few classes",
    "better localisation by the class-specific filters' maps than by the standard network's",
    "the class-specific activation pattern detects adversarial samples better than the standard network's",
)
#: B-cosification (NeurIPS 2024) §4, ImageNet: how many times fewer epochs the B-cosified model
#: needs than the B-cos model trained from scratch to reach the latter's accuracy
BCOSIFICATION_SPEEDUP = {"DenseNet-121": 4.7, "ViT-S": 9.0}

#: B-cos v2 (TPAMI 2024) trained from scratch, ImageNet top-1 (%): the accuracies B-cosification aims at
BCOS_V2_FROM_SCRATCH_IMAGENET = {"ResNet-50": 75.88, "DenseNet-121": 73.61, "ViT-B (simple)": 74.41, "ViT-c-B": 77.15}
#: DISCOVER (Panousis & Chatzis, NeurIPS 2023) §3: the share of active units with U = 24
#: competitors per block (one winner per block: 1/24 ≈ 4 %), the paper's sparsity claim
DISCOVER_DENSITY = 1 / 24

#: DISCOVER, ImageNet top-1 (%) of the LWTA DeiTs (the authors' public code)
DISCOVER_IMAGENET_ACCURACY = {"DeiT-T/8": 77.0, "DeiT-S/12": 72.5}

#: B-cos v2 (TPAMI 2024), ImageNet top-1 accuracy (%) of B-cos networks trained from scratch
BCOS_V2_IMAGENET_ACCURACY = {"resnet50": 75.9, "densenet121": 73.6, "vit_s": 69.3}
