"""CoDA Nets: Convolutional Dynamic Alignment Networks (Böhle, Fritz, Schiele; CVPR 2021).

The paper in four lines:

* A **Dynamic Alignment Unit** computes its weights from its input, ``w(x) = B·(A x) + b``
  (rank r), and outputs ``g(w(x))ᵀx`` with ``‖g(w)‖ < 1`` (§3.1–3.2, :mod:`.layers`): large
  outputs need weights aligned with x.
* A **CoDA Net** is DAU layers only, then sum pooling and ``logit = z / T + b`` (§3.3).  In
  explanation mode it is exactly ``y = W(x) x``, so ``W(x) ⊙ x`` sums to ``logit − b``.
* The **temperature T** sets the alignment pressure (§5, Fig. on T): the logits must be
  large for a low loss, and only aligned weights give large outputs, so a larger T forces
  stronger alignment — and, in the paper, better localisation.
* **Hybrids** (§5, ImageNet): a conventional network's first layers followed by DAUs; the
  DAU part is dynamic linear in *its* input, so the explanation is exact at that layer
  ("interpretable depth") and is compared with Grad-CAM at the same layer.

Models (:mod:`.model`): ``coda_net`` (the paper's 9-layer CIFAR-10 net by default) and
``coda_hybrid``.  Metric (:mod:`.metrics`): ``dau_input_localisation``.  Figures and report
(:mod:`.present`): the T sweep and CoDA next to the B-cos CNN.
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(name="CoDA", paper="Böhle, Fritz, Schiele: Convolutional Dynamic Alignment Networks for "
                    "Interpretable Classifications (CVPR 2021)",
                    models=("coda_net", "coda_hybrid"), groups=("coda_t_sweep",),
                    metrics=("dau_input_localisation",), order=30)
