"""B-cosification (Arya, Rao, Böhle, Schiele; NeurIPS 2024): a trained conventional network,
converted into a B-cos network (:func:`.convert.bcosify`) and fine-tuned briefly, reaches the
accuracy of a B-cos network trained from scratch in a fraction of the epochs (paper: 4.7× fewer
for DenseNet-121, 9× for ViT-S on ImageNet), with on-par localisation.

In the pipeline a B-cosified model is an entry with ``arch: bcosified`` that names the trained
model it starts from (``init_from: std_cnn``): :func:`.model.init` converts that model, and the
builder :func:`.model.bcosified` rebuilds the converted structure so that the saved model loads.
Its options (:class:`.model.BcosificationOptions`) set the conversion and the fine-tuning
schedule: B fixed (the paper's choice) or rising linearly from ``b_start``; biases removed (the
paper) or kept and faded out linearly over fine-tuning.

The experiment (group ``bcosification``): the B-cosified ``std_cnn``, fine-tuned, against the
B-cos CNN of the same shape trained from scratch; accuracy and localisation after every epoch
(``train.epoch_metrics: [fixed_grid_localisation]``, :mod:`.metrics`), the curves and the
speed-up (:mod:`.present`).
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(name="B-cosification",
                    paper="Arya, Rao, Böhle, Schiele: B-cosification: Transforming Deep Neural Networks to be "
                          "Inherently Interpretable (NeurIPS 2024)",
                    models=("bcosified",), groups=("bcosification",), metrics=("fixed_grid_localisation",), order=20)
