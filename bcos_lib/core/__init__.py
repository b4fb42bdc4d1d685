"""What every stage of the pipeline runs: the settings of params.yaml (:mod:`.config`), the
method contract and the registries (:mod:`.contract`, :mod:`.registry`), the data
(:mod:`.data`), the project's paths, file helpers (:mod:`.paths`, :mod:`.utils`) and a stage's
set-up and files (:mod:`.pipeline`).  Nothing here names a paper, a model or a method; the
generated ``dvc.yaml`` lists this folder as one dependency of every stage."""
