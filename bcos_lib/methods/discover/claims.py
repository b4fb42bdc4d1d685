"""DISCOVER's claims that this companion tests (see :mod:`bcos_lib.claims`)."""
from __future__ import annotations

from ...claims import Arm, Claim, Samples, SourceContext, register_source
from ...core.contract import ModelResult


@register_source("dissection_share")
def _share(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """The dissected neurons as outcomes (1 = its text label is a concept of its class, 0 = not)."""
    d = r.metric("dissection") or {}
    if d.get("share_class_concept") is None or not d.get("n_neurons"):
        return None
    return Samples.outcomes(float(d["share_class_concept"]), int(d["n_neurons"]))


CLAIMS = (
    Claim("discover.accuracy", short="LWTA CNN keeps its ReLU twin's accuracy (within 1 point)",
          claim="A CNN with stochastic LWTA activations keeps the accuracy of its ReLU twin "
          "(within 1 point)",
          paper="DISCOVER (NeurIPS 2023) §4", paper_value="accuracy kept or improved (ImageNet)",
          metric="accuracy", arms=(Arm("lwta_cnn"), Arm("lwta_twin_cnn")), threshold=-1.0, unit="points"),
    Claim("discover.sparsity", short="LWTA activations far sparser than the twin's",
          claim="LWTA activations are far sparser than the twin's (share of active units)",
          paper="DISCOVER (NeurIPS 2023) §3", paper_value="1/U active (U = 24: 4 %)",
          metric="summary", arms=(Arm("lwta_cnn", column="activation_density.mean_density"),
                                  Arm("lwta_twin_cnn", column="activation_density.mean_density")),
          direction="less"),
    Claim("discover.dissection", short="More LWTA neurons get a text label that fits their class",
          claim="More of the LWTA network's neurons get a text label that fits their class "
          "(share of dissected neurons)",
          paper="DISCOVER (NeurIPS 2023) §4", paper_value="more specific neurons, more accurate descriptions",
          metric="dissection_share", arms=(Arm("lwta_cnn"), Arm("lwta_twin_cnn"))),
)
