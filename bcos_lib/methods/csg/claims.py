"""The class-specific gates paper's claims that this companion tests (see :mod:`bcos_lib.claims`).

Every comparison is between the gated network and the same network trained without gates, scored
the same way (the filters' maps are assigned to classes by mutual information in both)."""
from __future__ import annotations

from ...claims import Arm, Claim, Samples, SourceContext, register_source
from ...core.contract import ModelResult


@register_source("filter_mi")
def _filter_mi(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Each last-layer filter's largest mutual information with a class (the terms of the MIS)."""
    t = r.tables.get("mutual_information")
    if t is None or not len(t):
        return None
    return Samples(t.groupby("filter")["mi"].max().to_numpy(float))


@register_source("filter_localisation")
def _filter_loc(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Per-grid mean localisation of the class filters' maps, filters assigned by ``arm.column``
    (``mi`` or ``gate``)."""
    t = r.tables.get("filter_localisation")
    if t is None or not len(t):
        return None
    t = t[t["assignment"] == (arm.column or "mi")]
    per_grid = t.groupby("grid")["score"].mean()
    return Samples(per_grid.to_numpy(float)) if len(per_grid) else None


CLAIMS = (
    Claim("csg.accuracy", short="CSG network about as accurate as without gates (within 1 point)",
          claim="A network trained with class-specific gates is about as accurate as the same "
          "network trained without (within 1 point)",
          paper="CSG (ECCV 2020) §4.1", paper_value="comparable accuracy (CIFAR-10, ImageNet)",
          metric="accuracy", arms=(Arm("csg_std_cnn_small"), Arm("std_cnn_small")), threshold=-1.0, unit="points"),
    Claim("csg.mis", short="CSG filters more class-specific (MIS, nats)",
          claim="Its last-layer filters are more class-specific (higher mutual information score, nats)",
          paper="CSG (ECCV 2020) §4.2", paper_value="much higher MIS",
          metric="filter_mi", arms=(Arm("csg_std_cnn_small"), Arm("std_cnn_small"))),
    Claim("csg.localisation", short="CSG filter maps localise better",
          claim="The maps of its class filters localise better (filters assigned by mutual "
          "information in both networks)",
          paper="CSG (ECCV 2020) §4.3", paper_value="better localisation (VOC)",
          metric="filter_localisation", arms=(Arm("csg_std_cnn_small", column="mi"), Arm("std_cnn_small", column="mi"))),
    Claim("csg.adversarial", short="CSG activations detect adversarial images better (AUROC)",
          claim="Its activation pattern detects adversarial images better (AUROC of the "
          "random-forest detector)",
          paper="CSG (ECCV 2020) §4.4", paper_value="better adversarial detection (CIFAR-10)",
          metric="summary", arms=(Arm("csg_std_cnn_small", column="adversarial_detection.auroc_forest"),
                                  Arm("std_cnn_small", column="adversarial_detection.auroc_forest"))),
)
