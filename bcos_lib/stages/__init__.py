"""One module per pipeline stage, each with a ``run`` function that a notebook calls.

Each module imports only what its stage needs, so dvc.yaml can list precise code
dependencies (changing the figures does not retrain the models)."""
