"""The margin study: how far a B-cos network's own explanation localises ahead of post-hoc
explanations (CoDA Nets §5.1; B-cos v1 §5.2), over training and across the levers the papers
name — training length, B, the logit temperature T, MaxOut and the ``[x, 1 − x]`` encoding.

The study's models are ordinary B-cos and standard CNNs (``group: margin`` in params.yaml), so
it has no model side: ``metrics.py`` registers ``tracked_localisation`` (the grid pointing game
on grids that stay fixed over training, run after every epoch through ``train.epoch_metrics``),
``present.py`` draws the curves and the margin.
"""
from ...core.contract import MethodSpec

METHOD = MethodSpec(name="margin", paper="CoDA Nets (CVPR 2021) §5.1; B-cos v1 (CVPR 2022) §5.2",
                    groups=("margin",), metrics=("tracked_localisation",), order=90)
