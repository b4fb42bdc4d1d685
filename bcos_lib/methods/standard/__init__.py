"""The conventional baselines: the same architectures with ordinary convolutions, batch norm
and ReLU, trained with cross-entropy.  They are not dynamic linear, so their
"explanations" are post-hoc (Input×Gradient, Grad-CAM, …, see :mod:`bcos_lib.explain`).

Nothing here changes the training or the evaluation: the method exists so that every model
of the pipeline belongs to one method, and so the contract is shown at its smallest.
"""
from __future__ import annotations

from ...core.contract import MethodSpec

METHOD = MethodSpec(
    name="standard",
    paper="conventional CNN and ResNet baselines (He et al., CVPR 2016)",
    models=("std_cnn", "std_resnet"),
    order=0,
)
