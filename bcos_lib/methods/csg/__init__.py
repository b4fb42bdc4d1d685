"""Class-specific gates, CSG (Liang, Ouyang, Zeng, Su, He, Wang, Zhu: "Training Interpretable
Convolutional Neural Networks by Differentiating Class-specific Filters", ECCV 2020).

The idea (§3): put a gate matrix G ∈ [0, 1]^(C×K) on the C filters of the last convolutional
layer (:mod:`.layers`) and train in two alternating modes that share the backbone — *standard*
epochs (gate open) and *CSG* epochs, in which an image of class y only passes through the
filters of the column G[:, y], the loss gains λ·ReLU(‖G‖₁ − d·|G|) and every filter's row is
renormalised after each step.  At test time the gate is open again: the network is an ordinary
classifier whose last-layer filters have each learnt to serve few classes.

:mod:`.model`: the gated twins ``csg_std_cnn`` and ``csg_bcos_cnn`` and the alternating
training.  :mod:`.metrics`: MIS, the gate's own classification, filter localisation and
adversarial detection, for any CNN, gated or not.  :mod:`.present`: the figures and the table.
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(
    name="csg",
    paper="Class-specific gates: Liang et al., \"Training Interpretable Convolutional Neural Networks by "
          "Differentiating Class-specific Filters\", ECCV 2020",
    models=("csg_std_cnn", "csg_bcos_cnn"),
    groups=("csg",),
    metrics=("mis", "gate", "filter_localisation", "adversarial_detection"),
    order=50,
    figures_load=("mis",),   # the filter maps run the models scored with the mutual-information score
)
