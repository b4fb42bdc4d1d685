"""The layers every method shares: the explanation-mode switch (:mod:`.explanation_mode`),
input encodings and normalisation (:mod:`.encoding`) and the fixed logit layer (:mod:`.logit`).
A paper's own layers live in its package (``bcos_lib/methods/<paper>/layers.py``: B-cos
conv/linear, DAUs, LWTA, class-specific gates, B-cosified layers).  Import the submodule you
need: this file imports nothing, so that a stage loads only the layers its model uses."""
