"""The method contract (bcos_lib.core.contract, bcos_lib.core.registry): a new paper is one folder plus
params.yaml entries.  A method written here as a package — a manifest, a layer and a model builder
with an extra loss term and an after-step hook (model.py), a metric with options (metrics.py), a
figure and a report section (present.py) — trains, explains, evaluates and reaches the report through
the shared stages, with no edit to any shared module.  Also: every registered model belongs to exactly
one method, and the registries reject what they should.
"""
from __future__ import annotations

import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bcos_lib.core import contract as C  # noqa: E402
from bcos_lib.core import registry  # noqa: E402
from bcos_lib.core.config import ConfigError, load_params  # noqa: E402
from bcos_lib.methods.bcos.layers import BcosConv2d  # noqa: E402

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- a toy paper, as a folder
TOY_PACKAGE = {
    "__init__.py": """
        \"\"\"A toy paper: one folder, as every paper of the companion.\"\"\"
        from bcos_lib.core.contract import MethodSpec

        METHOD = MethodSpec(name="toy", paper="a test", models=("toy_net",), groups=("toy_group",),
                            metrics=("toy_metric",), order=95)
        """,
    "layers.py": """
        from torch import nn


        class HalfScale(nn.Module):
            \"\"\"The toy method's "layer": multiplies by a fixed 0.5 (still dynamic linear).\"\"\"

            def forward(self, x):
                return 0.5 * x
        """,
    "model.py": """
        from dataclasses import dataclass

        from bcos_lib.core.contract import TrainHooks
        from bcos_lib.layers.logit import LogitLayer
        from bcos_lib.methods.bcos.layers import BcosConv2d
        from bcos_lib.models.cnn import ConvNet
        from bcos_lib.core.registry import register_model
        from bcos_lib.train import default_step

        from .layers import HalfScale

        CALLS = {"after_step": 0}


        @register_model
        def toy_net(num_classes: int = 10, image_channels: int = 1, width: int = 8) -> ConvNet:
            def conv(ci, co, **kw):
                return BcosConv2d(ci, co, b=2.0, **kw)

            return ConvNet(image_channels=image_channels, num_classes=num_classes, channels=[width, width],
                           strides=[1, 2], conv=conv, classifier=conv, norm=None, act=HalfScale, stem=None,
                           logit=LogitLayer(num_classes, 1.0, None), encoding="add_inverse", default_loss="bce",
                           dynamic_linear=True)


        @dataclass
        class ToyOptions:
            penalty: float = 0.01


        OPTIONS = ToyOptions


        def training(model, options, cfg):
            def step(model, x, y, info):
                out = default_step(model, x, y, info)
                penalty = options.penalty * sum(p.pow(2).sum() for p in model.parameters())
                out.loss = out.loss + penalty
                out.terms["penalty"] = float(penalty.detach())
                return out

            def after_step(model, info):
                CALLS["after_step"] += 1

            def after_epoch(model, info):
                assert not model.training
                return {"epoch_seen": info.epoch + 1}

            return TrainHooks(step=step, after_step=after_step, after_epoch=after_epoch)
        """,
    "metrics.py": """
        from dataclasses import dataclass

        import pandas as pd
        import torch

        from bcos_lib.core.contract import Metric, MetricResult
        from bcos_lib.core.registry import register_metric


        @dataclass
        class ToyMetricOptions:
            n_images: int = 16


        def toy_metric(ctx):
            with torch.no_grad():
                x = ctx.model.prepare_input(ctx.test_data.images[:ctx.options.n_images])
                mean_logit = float(ctx.model(x).mean())
            return MetricResult({"mean_logit": mean_logit, "n": ctx.options.n_images},
                                {"toy_table": pd.DataFrame({"image": range(3), "value": [1.0, 2.0, 3.0]})})


        register_metric(Metric("toy_metric", toy_metric, ToyMetricOptions))
        """,
    "present.py": """
        import matplotlib.pyplot as plt

        from bcos_lib.core.contract import results_of


        def figures(results, run):
            fig, ax = plt.subplots()
            ax.plot([0, 1], [0, 1])
            return {"toy_figure": fig}


        def report(results):
            rows = list(results_of(results, method="toy"))
            return "### Toy method\\n\\n" + "\\n".join(
                f"- `{r.key}`: mean logit {r.metric('toy_metric')['mean_logit']:.3f}" for r in rows
                if r.metric("toy_metric"))
        """,
}


def _forget_discovery() -> None:
    registry._DISCOVERED = False
    registry._METHODS.clear()
    registry._ARCH_TO_METHOD.clear()
    for name in [n for n, m in registry._METRIC_MODULES.items() if m.startswith("bcos_lib.methods.toy")]:
        registry._METRIC_MODULES.pop(name, None)


@pytest.fixture()
def toy_method(tmp_path):
    """The toy paper as a folder next to the papers' packages, for one test; every trace removed afterwards."""
    import bcos_lib.methods as methods_pkg

    folder = tmp_path / "extra_methods" / "toy"
    folder.mkdir(parents=True)
    for name, text in TOY_PACKAGE.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    methods_pkg.__path__.append(str(folder.parent))
    _forget_discovery()
    try:
        method = registry.get_method("toy")
        assert method.package == "bcos_lib.methods.toy"
        yield method
    finally:
        methods_pkg.__path__.remove(str(folder.parent))
        registry._MODELS.pop("toy_net", None)
        registry._METRICS.pop("toy_metric", None)
        for mod in [m for m in sys.modules if m.startswith("bcos_lib.methods.toy")]:
            del sys.modules[mod]
        _forget_discovery()


def _calls() -> dict[str, int]:
    return sys.modules["bcos_lib.methods.toy.model"].CALLS


def _params(tmp_path, model_yaml: str) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(textwrap.dedent("""
        base: {seed: 0, device: cpu, profile: default}
        data: {dataset: fashion_mnist, root: data/fashion-mnist, train_subset: 2000, test_subset: 300}
        train: {epochs: 2, batch_size: 50, lr: 0.01, checkpoint_every: 10}
        explain: {n_images: 2, batch_size: 16}
        evaluate: {grid_size: 2, n_grids: 2, min_confidence: 0.0, attributions: [own, ixg], deletion_images: 4,
                   deletion_steps: 2, deletion_attributions: [own, random], metrics: [localisation, deletion, toy_metric],
                   options: {toy_metric: {n_images: 8}}}
        figures: {dpi: 40}
        models:
        """) + textwrap.indent(textwrap.dedent(model_yaml), "  "))
    return str(p)


TOY_ENTRY = """
toy:
  arch: toy_net
  kwargs: {width: 16}
  options: {penalty: 0.0001}
  label: toy net
"""


def test_a_method_defined_in_a_test_goes_through_every_stage(toy_method, tmp_path):
    from bcos_lib.core import pipeline
    from bcos_lib.stages import evaluate, explain, figures, train

    run = pipeline.setup(None, str(tmp_path / "out"), _params(tmp_path, TOY_ENTRY))
    m = train.run(run, "toy", progress=False, log=lambda s: None)
    assert m["method"] == "toy"
    assert _calls()["after_step"] == 2 * 40  # 2000 images / 50 per step, 2 epochs
    history = pd.read_csv(run.path("results", "train", "toy", "history.csv"))
    assert "train_penalty" in history and (history["train_penalty"] > 0).all()
    assert history["epoch_seen"].tolist() == [1, 2]

    ex = explain.run(run, "toy", log=lambda s: None)
    assert ex["explainable"] and ex["sums_to_logit"]

    s = evaluate.run(run, "toy", log=lambda s: None)
    assert set(s) >= {"localisation", "deletion", "toy_metric"}
    assert s["toy_metric"]["n"] == 8  # the metric's options reached it
    assert set(s["localisation"]["attributions"]) == {"own", "ixg"}
    tables = run.path("results", "evaluate", "toy", "tables")
    assert {f.name for f in tables.glob("*.csv")} == {"localisation.csv", "deletion.csv", "toy_table.csv",
                                                     "predictions.csv"}

    written = figures.run(run, log=lambda s: None)
    assert "toy_figure" in written and written["toy_figure"].is_file()
    report = written["report"].read_text()
    assert "### Toy method" in report and "`toy`: mean logit" in report
    assert "`toy`" in report.split("### Toy method")[0]  # in the shared accuracy/localisation tables too
    # and in what DVC shows as metrics, with the keys every model has
    head = json.loads(written["metrics/toy"].read_text())
    assert set(head) == {"accuracy", "loc_own", "loc_posthoc", "del_own"}
    assert head["loc_own"] == pytest.approx(s["localisation"]["attributions"]["own"]["mean"], abs=1e-4)


def test_method_options_are_validated_before_anything_runs(toy_method, tmp_path):
    bad = TOY_ENTRY.replace("penalty: 0.0001", "penaltty: 0.0001")
    with pytest.raises(ConfigError, match=r"models\.toy\.options\.penaltty"):
        load_params(_params(tmp_path, bad))
    bad = TOY_ENTRY.replace("penalty: 0.0001", "penalty: lots")
    with pytest.raises(ConfigError, match=r"models\.toy\.options\.penalty: expected a number"):
        load_params(_params(tmp_path, bad))


def test_metric_names_and_options_are_validated(toy_method, tmp_path):
    path = _params(tmp_path, TOY_ENTRY)
    text = open(path).read()
    open(path, "w").write(text.replace("toy_metric]", "toy_metrik]"))
    with pytest.raises(ConfigError, match=r"evaluate\.metrics: unknown metric 'toy_metrik'"):
        load_params(path)
    open(path, "w").write(text.replace("n_images: 8}", "n_imgs: 8}"))
    with pytest.raises(ConfigError, match=r"evaluate\.options\.toy_metric\.n_imgs"):
        load_params(path)


def test_group_must_be_declared_and_twin_must_be_a_model(toy_method, tmp_path):
    load_params(_params(tmp_path, TOY_ENTRY.replace("label: toy net", "label: toy net\n  group: toy_group")))
    with pytest.raises(ConfigError, match=r"models\.toy\.group: unknown group 'toy_grup'.*toy_group \(toy\)"):
        load_params(_params(tmp_path, TOY_ENTRY.replace("label: toy net", "label: toy net\n  group: toy_grup")))
    with pytest.raises(ConfigError, match=r"models\.toy\.twin: 'std' is not another key"):
        load_params(_params(tmp_path, TOY_ENTRY.replace("label: toy net", "label: toy net\n  twin: std")))


def test_init_from_must_name_a_model_and_not_loop(toy_method, tmp_path):
    entry = TOY_ENTRY + "toy2:\n  arch: toy_net\n  init_from: toy3\n"
    with pytest.raises(ConfigError, match=r"models\.toy2\.init_from: 'toy3' is not a key"):
        load_params(_params(tmp_path, entry))
    entry = TOY_ENTRY.replace("label: toy net", "label: toy net\n  init_from: toy2") + "toy2:\n  arch: toy_net\n  init_from: toy\n"
    with pytest.raises(ConfigError, match="cycle"):
        load_params(_params(tmp_path, entry))


def test_init_from_starts_from_the_trained_model(toy_method, tmp_path):
    """Without a method `init`, a model with `init_from` starts from the parent's weights."""
    from bcos_lib.core import pipeline
    from bcos_lib.stages import train

    entry = TOY_ENTRY + "toy_ft:\n  arch: toy_net\n  kwargs: {width: 16}\n  init_from: toy\n"
    run = pipeline.setup(None, str(tmp_path / "out"), _params(tmp_path, entry))
    train.run(run, "toy", progress=False, log=lambda s: None)
    parent = pipeline.load_trained(run, "toy")
    start = train.initial_model(run, "toy_ft", {"width": 16, "num_classes": 10, "image_channels": 1})
    for (n, a), b in zip(parent.state_dict().items(), start.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


def test_every_model_belongs_to_exactly_one_method():
    owners = {}
    for method in registry.list_methods():
        for arch in method.models:
            assert arch not in owners, f"{arch} is claimed by {owners[arch]} and {method.name}"
            owners[arch] = method.name
    assert set(owners) == set(registry.list_models())


def test_registries_reject_duplicates_and_unknown_names():
    with pytest.raises(KeyError, match="registered twice"):
        registry.register_method(C.Method(name="bcos", paper="again"))
    with pytest.raises(KeyError, match="claimed by"):
        registry.register_method(C.Method(name="thief", paper="x", models=("bcos_cnn",)))
    assert "thief" not in [m.name for m in registry.list_methods()]
    with pytest.raises(KeyError, match="registered twice"):
        registry.register_metric(C.Metric("localisation", lambda ctx: None))
    with pytest.raises(KeyError, match="registered twice"):
        registry.register_metric(C.Metric("mis", lambda ctx: None))   # CSG's manifest declares it
    with pytest.raises(KeyError, match="belongs to no method"):
        registry.method_of("no_such_model")
    from bcos_lib.explain import Attribution, attribution_label, register_attribution
    with pytest.raises(KeyError, match="registered twice"):
        register_attribution(Attribution("ixg", "again", lambda *a: None))
    with pytest.raises(ValueError, match="unknown attribution"):
        attribution_label("no_such_attribution")


def _toy_net() -> nn.Module:
    from bcos_lib.layers.logit import LogitLayer
    from bcos_lib.models.cnn import ConvNet

    def conv(ci, co, **kw):
        return BcosConv2d(ci, co, b=2.0, **kw)
    return ConvNet(image_channels=1, num_classes=10, channels=[8, 8], strides=[1, 2], conv=conv, classifier=conv,
                   norm=None, act=nn.Identity, stem=None, logit=LogitLayer(10, 1.0, None), encoding="add_inverse",
                   default_loss="bce", dynamic_linear=True)


def test_dynamic_linearity_is_declared_not_inferred():
    """A conventional stem in front of B-cos layers contains explainable layers but is not
    dynamic linear in its input: the model's declaration decides."""
    from bcos_lib.layers.explanation_mode import is_explainable
    model = _toy_net()
    assert model.explainable and is_explainable(model)
    model.dynamic_linear = False
    assert not model.explainable and not is_explainable(model)
    assert is_explainable(nn.Sequential(BcosConv2d(2, 4, 3)))  # a bare stack of layers: inferred


def test_evaluate_tables_folder_holds_exactly_this_runs_tables(tmp_path):
    """A metric set without tables still leaves the folder DVC tracks (the margin study's did not, and
    `dvc repro` stopped on the missing output), and a table an earlier configuration wrote is gone."""
    from bcos_lib.stages.evaluate import write_tables
    folder = tmp_path / "evaluate" / "m" / "tables"
    folder.mkdir(parents=True)
    (folder / "deletion.csv").write_text("model,auc\nm,0.2\n")  # from an earlier configuration
    write_tables({"localisation": pd.DataFrame({"model": ["m"], "score": [0.5]})}, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["localisation.csv"]
    write_tables({}, folder)
    assert folder.is_dir() and not any(folder.iterdir())
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tables"]  # no temporary folder left
