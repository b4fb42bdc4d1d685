"""scripts/fidelity.py: each variant names a model of params.yaml and an option its method accepts,
and reads numbers the model's evaluation writes."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys

import pytest

from bcos_lib.core.config import ConfigError, load_params, method_options
from bcos_lib.core.paths import project_root


def _script():
    spec = importlib.util.spec_from_file_location("fidelity", project_root() / "scripts" / "fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fidelity"] = mod   # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_variant_changes_a_valid_option_of_a_pipeline_model():
    fid, params = _script(), load_params()
    assert fid.VARIANTS
    for name, v in fid.VARIANTS.items():
        entry = params.model(v.key)
        changed = dataclasses.replace(entry, options={**entry.options, **v.options})
        opts = method_options(changed, v.key)
        assert all(getattr(opts, k) == val for k, val in v.options.items()), name
        assert method_options(entry, v.key) != opts, f"{name}: the pipeline already uses these options"
        evaluated = project_root() / "results" / "evaluate" / v.key / "metrics.json"
        if evaluated.is_file():   # what the variant reads exists in the pipeline's own evaluation
            summary = json.loads(evaluated.read_text())
            assert all(fid._get(summary, p) is not None for p in v.read.values()), name


def test_a_bad_option_value_is_refused_by_the_method():
    params = load_params()
    entry = params.model("bcosified_cnn")
    with pytest.raises(ConfigError, match="input_norm"):
        method_options(dataclasses.replace(entry, options={**entry.options, "input_norm": "both"}), "bcosified_cnn")
