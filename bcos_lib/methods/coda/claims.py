"""The CoDA Nets paper's claims that this companion tests (see :mod:`bcos_lib.claims`)."""
from ...claims import Arm, Claim

CLAIMS = (
    Claim("coda.localisation", short="CoDA own explanation localises better than Grad-CAM on the same net",
          claim="The own explanation of a CoDA net localises better than Grad-CAM on the "
          "same model (the same grids)",
          paper="CoDA Nets (CVPR 2021) §5.1", paper_value="0.912 vs 0.726 (CIFAR-10, T = 1000)",
          metric="localisation", arms=(Arm("coda_net", "own"), Arm("coda_net", "gradcam"))),
    Claim("coda.localisation_vs_t", short="CoDA localisation rises with the temperature T (per decade)",
          claim="Localisation of the own explanation rises with the temperature T "
          "(slope per decade of T)",
          paper="CoDA Nets (CVPR 2021) §5", paper_value="0.31, 0.64, 0.91 at T = 10, 100, 1000 (CIFAR-10)",
          metric="localisation", test="trend", group="coda_t_sweep", by="logit_temperature", log_x=True,
          arms=(Arm("", "own"),)),
)
