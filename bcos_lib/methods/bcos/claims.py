"""The B-cos papers' claims that this companion tests (see :mod:`bcos_lib.claims` for how each
is computed and judged).  The thresholds are part of the claim as stated, fixed before any run:
"costs little accuracy" is read as "within 1 point of the conventional network"."""
from ...claims import Arm, Claim

CLAIMS = (
    Claim("bcos.accuracy", short="B-cos CNN about as accurate as a plain CNN (within 1 point)",
          claim="A B-cos CNN is about as accurate as a conventional CNN of the same shape "
          "(within 1 point)",
          paper="B-cos v2 (TPAMI 2024) Table 1",
          paper_value="B-cos ResNet-50 75.9 %, close to the conventional network (ImageNet)",
          metric="accuracy", arms=(Arm("bcos_cnn"), Arm("std_cnn")), threshold=-1.0, unit="points"),
    Claim("bcos.localisation", short="B-cos own explanation localises better than Grad-CAM on a plain CNN",
          claim="The own explanation of a B-cos CNN localises better than Grad-CAM on a "
          "conventional CNN (the same grids, 3×3-smoothed maps)",
          paper="CoDA Nets (CVPR 2021) §5.1; B-cos v1 (CVPR 2022) §5.2",
          paper_value="0.912 vs Grad-CAM 0.726 (CoDA net, CIFAR-10)",
          metric="paired_localisation", arms=(Arm("bcos_cnn", "own"), Arm("std_cnn", "gradcam")), headline=True),
    Claim("bcos.localisation_unsmoothed", short="the same, unsmoothed maps",
          claim="The same comparison on unsmoothed maps",
          paper="CoDA Nets (CVPR 2021) §5.1", paper_value="0.912 vs Grad-CAM 0.726 (CoDA net, CIFAR-10)",
          metric="paired_localisation",
          arms=(Arm("bcos_cnn", "own", "score_unsmoothed"), Arm("std_cnn", "gradcam", "score_unsmoothed"))),
    Claim("bcos.localisation_same_model", short="On the B-cos CNN, own explanation localises better than occlusion",
          claim="On the B-cos CNN itself, the own explanation localises better than "
          "the best post-hoc attribution (occlusion)",
          paper="B-cos v2 (TPAMI 2024) §5.1", paper_value="own above every post-hoc attribution (ImageNet)",
          metric="localisation", arms=(Arm("bcos_cnn", "own"), Arm("bcos_cnn", "occlusion"))),
    Claim("bcos.faithfulness_correlation", short="Own explanation more faithful than Input×Gradient (faithfulness correlation)",
          claim="The own explanation of a B-cos CNN is more faithful than "
          "Input×Gradient on the same model (faithfulness correlation)",
          paper="B-cos v2 (TPAMI 2024) §5.2 (model faithfulness)", paper_value="own above post-hoc attributions",
          metric="faithfulness_correlation", arms=(Arm("bcos_cnn", "own"), Arm("bcos_cnn", "ixg"))),
    Claim("bcos.deletion", short="Own explanation's pixel deletion faster than Input×Gradient's (AUC)",
          claim="Deleting the pixels the own explanation ranks highest removes the class "
          "probability faster than deleting Input×Gradient's (area under the curve, lower is better)",
          paper="B-cos v2 (TPAMI 2024) §5.2 (pixel removal)", paper_value="own below post-hoc attributions",
          metric="summary", arms=(Arm("bcos_cnn", "own", "deletion.attributions.{attribution}.auc_most"),
                                  Arm("bcos_cnn", "ixg", "deletion.attributions.{attribution}.auc_most")),
          direction="less"),
    Claim("bcos.localisation_vs_b", short="Localisation rises with B (slope per unit of B)",
          claim="Localisation of the own explanation rises with B (slope per unit of B)",
          paper="B-cos v1 (CVPR 2022) §5.2", paper_value="rises from B = 1 to 2.5 (CIFAR-10)",
          metric="localisation", test="trend", group="b_sweep", by="b", arms=(Arm("", "own"),)),
    Claim("bcos.accuracy_vs_b", short="Accuracy falls slightly with B (points per unit of B)",
          claim="Accuracy falls slightly as B rises (slope per unit of B, in points)",
          paper="B-cos v1 (CVPR 2022) Table 1", paper_value="93.53 → 92.37 % from B = 1 to 2.5 (CIFAR-10)",
          metric="accuracy", test="trend", group="b_sweep", by="b", direction="less", unit="points"),
)
