"""The papers' methods, one package each (``bcos_lib/methods/<paper>/``).

A package's ``__init__.py`` is its manifest (``METHOD = MethodSpec(...)``); ``model.py``,
``metrics.py`` and ``present.py`` are what the train, evaluate and figures/report stages import
(:mod:`bcos_lib.core.contract` says what each holds).  This file imports nothing: the registry
(:mod:`bcos_lib.core.registry`) finds the packages on disk and imports a side only when a stage
needs it.
"""
