"""The method contract (bcos_lib.methods): a method defined only here — a layer, a model
builder, an extra loss term with an after-step hook, a metric, a figure and a report section —
trains, explains, evaluates and reaches the report through the shared stages, with no edit
to any shared module.  Also: every registered model belongs to exactly one method, and the
registries reject what they should.
"""
from __future__ import annotations

import json

import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bcos_lib import methods as M  # noqa: E402
from bcos_lib import registry  # noqa: E402
from bcos_lib.config import ConfigError, load_params  # noqa: E402
from bcos_lib.layers import BcosConv2d, LogitLayer  # noqa: E402
from bcos_lib.models.cnn import ConvNet  # noqa: E402

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- a toy method
class HalfScale(nn.Module):
    """The toy method's "layer": multiplies by a fixed 0.5 (still dynamic linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x


def toy_net(num_classes: int = 10, image_channels: int = 1, width: int = 8) -> ConvNet:
    def conv(ci, co, **kw):
        return BcosConv2d(ci, co, b=2.0, **kw)

    return ConvNet(image_channels=image_channels, num_classes=num_classes, channels=[width, width], strides=[1, 2],
                   conv=conv, classifier=conv, norm=None, act=HalfScale, stem=None,
                   logit=LogitLayer(num_classes, 1.0, None), encoding="add_inverse", default_loss="bce",
                   dynamic_linear=True)


@dataclass
class ToyOptions:
    penalty: float = 0.01


CALLS = {"after_step": 0}


def toy_training(model, options: ToyOptions, cfg):
    from bcos_lib.train import default_step

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

    return M.TrainHooks(step=step, after_step=after_step, after_epoch=after_epoch)


@dataclass
class ToyMetricOptions:
    n_images: int = 16


def toy_metric(ctx: M.EvalContext) -> M.MetricResult:
    with torch.no_grad():
        x = ctx.model.prepare_input(ctx.test_data.images[:ctx.options.n_images])
        mean_logit = float(ctx.model(x).mean())
    return M.MetricResult({"mean_logit": mean_logit, "n": ctx.options.n_images},
                          {"toy_table": pd.DataFrame({"image": range(3), "value": [1.0, 2.0, 3.0]})})


def toy_figures(results, run):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return {"toy_figure": fig}


def toy_report(results):
    rows = [r for r in M.results_of(results, method="toy")]
    return "### Toy method\n\n" + "\n".join(f"- `{r.key}`: mean logit {r.metric('toy_metric')['mean_logit']:.3f}"
                                           for r in rows if r.metric("toy_metric"))


@pytest.fixture()
def toy_method():
    """Register the toy method for one test and remove every trace of it afterwards."""
    registry.list_models()
    registry.register_model(toy_net)
    method = M.register_method(M.Method(name="toy", paper="a test", models=("toy_net",), options=ToyOptions,
                                        training=toy_training, figures=toy_figures, report=toy_report))
    M.register_metric(M.Metric("toy_metric", toy_metric, ToyMetricOptions))
    try:
        yield method
    finally:
        registry._MODELS.pop("toy_net", None)
        M._METHODS.pop("toy", None)
        M._ARCH_TO_METHOD.pop("toy_net", None)
        M._METRICS.pop("toy_metric", None)


def _params(tmp_path, model_yaml: str) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(textwrap.dedent("""
        base: {seed: 0, device: cpu, profile: default}
        data: {dataset: fashion_mnist, root: data/fashion-mnist, train_subset: 2000, test_subset: 300}
        train: {epochs: 2, batch_size: 50, lr: 0.01, checkpoint_every: 10}
        explain: {n_images: 2, batch_size: 16}
        evaluate: {grid_size: 2, n_grids: 2, min_confidence: 0.0, methods: [own, ixg], deletion_images: 4,
                   deletion_steps: 2, deletion_methods: [own, random], metrics: [localisation, deletion, toy_metric],
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
    from bcos_lib import pipeline
    from bcos_lib.stages import evaluate, explain, figures, train

    run = pipeline.setup(None, str(tmp_path / "out"), _params(tmp_path, TOY_ENTRY))
    before = CALLS["after_step"]
    m = train.run(run, "toy", progress=False, log=lambda s: None)
    assert m["method"] == "toy"
    assert CALLS["after_step"] - before == 2 * 40  # 2000 images / 50 per step, 2 epochs
    history = pd.read_csv(run.path("results", "train", "toy", "history.csv"))
    assert "train_penalty" in history and (history["train_penalty"] > 0).all()
    assert history["epoch_seen"].tolist() == [1, 2]

    ex = explain.run(run, "toy", log=lambda s: None)
    assert ex["explainable"] and ex["sums_to_logit"]

    s = evaluate.run(run, "toy", log=lambda s: None)
    assert set(s) >= {"localisation", "deletion", "toy_metric"}
    assert s["toy_metric"]["n"] == 8  # the metric's options reached it
    assert set(s["localisation"]["methods"]) == {"own", "ixg"}
    tables = run.path("results", "evaluate", "toy", "tables")
    assert {f.name for f in tables.glob("*.csv")} == {"localisation.csv", "deletion.csv", "toy_table.csv"}

    written = figures.run(run, log=lambda s: None)
    assert "toy_figure" in written and written["toy_figure"].is_file()
    report = written["report"].read_text()
    assert "### Toy method" in report and "`toy`: mean logit" in report
    assert "`toy`" in report.split("### Toy method")[0]  # in the shared accuracy/localisation tables too
    # and in what DVC shows as metrics, with the keys every model has
    head = json.loads(written["metrics/toy"].read_text())
    assert set(head) == {"accuracy", "loc_own", "loc_posthoc", "del_own"}
    assert head["loc_own"] == pytest.approx(s["localisation"]["methods"]["own"]["mean"], abs=1e-4)


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


def test_init_from_must_name_a_model_and_not_loop(toy_method, tmp_path):
    entry = TOY_ENTRY + "toy2:\n  arch: toy_net\n  init_from: toy3\n"
    with pytest.raises(ConfigError, match=r"models\.toy2\.init_from: 'toy3' is not a key"):
        load_params(_params(tmp_path, entry))
    entry = TOY_ENTRY.replace("label: toy net", "label: toy net\n  init_from: toy2") + "toy2:\n  arch: toy_net\n  init_from: toy\n"
    with pytest.raises(ConfigError, match="cycle"):
        load_params(_params(tmp_path, entry))


def test_init_from_starts_from_the_trained_model(toy_method, tmp_path):
    """Without a method `init`, a model with `init_from` starts from the parent's weights."""
    from bcos_lib import pipeline
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
    for method in M.list_methods():
        for arch in method.models:
            assert arch not in owners, f"{arch} is claimed by {owners[arch]} and {method.name}"
            owners[arch] = method.name
    assert set(owners) == set(registry.list_models())


def test_registries_reject_duplicates_and_unknown_names():
    with pytest.raises(KeyError, match="registered twice"):
        M.register_method(M.Method(name="bcos", paper="again"))
    with pytest.raises(KeyError, match="claimed by"):
        M.register_method(M.Method(name="thief", paper="x", models=("bcos_cnn",)))
    assert "thief" not in [m.name for m in M.list_methods()]
    with pytest.raises(KeyError, match="registered twice"):
        M.register_metric(M.Metric("localisation", lambda ctx: None))
    with pytest.raises(KeyError, match="belongs to no registered method"):
        M.method_of("no_such_model")
    from bcos_lib.attribution import Attribution, method_label, register_attribution
    with pytest.raises(KeyError, match="registered twice"):
        register_attribution(Attribution("ixg", "again", lambda *a: None))
    with pytest.raises(ValueError, match="unknown attribution method"):
        method_label("no_such_method")


def test_dynamic_linearity_is_declared_not_inferred():
    """A conventional stem in front of B-cos layers contains explainable layers but is not
    dynamic linear in its input: the model's declaration decides."""
    from bcos_lib.layers import is_explainable
    model = toy_net()
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
