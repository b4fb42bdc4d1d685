"""B-cos networks (Böhle, Fritz, Schiele: "B-cos Networks: Alignment is All We Need for
Interpretability", CVPR 2022 = v1; "B-cos Alignment for Inherently Interpretable CNNs and
Vision Transformers", TPAMI 2024 = v2).

:mod:`.layers` holds the B-cos conv/linear layers (Eq. 3 of v1), :mod:`.attention` B-cos
attention and :mod:`.norms` the uncentred norms of v2; :mod:`.model` fills the shared
architectures with them (``bcos_cnn``, ``bcos_resnet``, ``bcos_vit``).  Training is the shared loop
with binary cross-entropy on one-hot targets (v1 §3.4; the models' ``default_loss``), so the method
adds no training hooks.  :mod:`.present` adds the **B sweep** (v1 Table 1 / §5.1): accuracy and
own-explanation localisation against B, beside the paper's CIFAR-10 accuracies.
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(
    name="bcos",
    paper="B-cos networks: v1 (Böhle et al., CVPR 2022), v2 (Böhle et al., TPAMI 2024)",
    models=("bcos_cnn", "bcos_resnet", "bcos_vit"),
    groups=("b_sweep",),
    order=10,
)
