"""DISCOVER (Panousis & Chatzis, "DISCOVER: Making Vision Networks Interpretable via
Competition and Dissection", NeurIPS 2023).

The paper in three steps, and where each lives:

1. **Competition.** Replace the activations of a network by *stochastic local winner-takes-all*
   layers (:class:`.layers.LWTA`): blocks of U units, one sampled winner per block
   (Gumbel-softmax, straight-through, τ ≈ 1.67 in training; the largest unit at test time), so
   only 1/U of the units fire (U = 24 → ≈ 4 %).  Models here: ``lwta_cnn`` — the standard CNN's
   shape (``std_cnn``) with LWTA in place of ReLU — and ``lwta_vit``, a conventional small ViT
   with LWTA in its MLPs.  ``competitors=1`` gives back the usual activation: ``lwta_cnn(1)`` *is*
   ``std_cnn``, ``lwta_vit(1)`` is the GELU ViT (the twins of the comparison).
2. **Training.** The shared ``fit``; the method's options set the Gumbel temperature on the
   LWTA layers and, optionally, add the paper's KL term against a uniform prior over winners
   (off by default, as in the public code).
3. **Dissection.** Every neuron of the last hidden layer gets a text label by soft-WPMI over its
   most activating probe images (:mod:`.dissect`), from annotated concepts or CLIP
   (:mod:`.concepts`).  The paper's claim: sparse, competing neurons are more specific,
   so their descriptions fit better.

Metrics (``evaluate.metrics``), for LWTA models and their twins alike: ``activation_density``
(per-layer fraction of non-zero units, and the accuracy with deterministic and sampled winners)
and ``dissection`` (labels; share of neurons whose label is a concept of the class they
support most; mean soft-WPMI).
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(name="DISCOVER", paper="Panousis & Chatzis, DISCOVER: Making Vision Networks Interpretable via "
                    "Competition and Dissection, NeurIPS 2023",
                    models=("lwta_cnn", "lwta_vit"), groups=("discover",), metrics=("activation_density", "dissection"), order=40,
                    figures_load=("dissection",))   # the winning neurons of the dissected models
