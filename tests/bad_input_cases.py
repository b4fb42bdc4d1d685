"""The bad-input cases of docs/bad-input.md: each one is tried here, and the page lists what it printed.

Every case is a function that does what a user might do (a typo in params.yaml, a damaged data
file, a folder that cannot be written, …) in a scratch folder and returns the message the
project answers with.  ``tests/test_bad_input_doc.py`` runs them (each must give its message)
and checks that docs/bad-input.md is what :func:`render` writes; ``python
scripts/bad_input_doc.py`` rewrites the page.  Paths in the messages are relative to the
scratch folder, so the page is the same on every machine.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    group: str
    what: str                      # what the user did
    run: Callable[[], str]         # does it; returns the message
    expect: str                    # a part of the message the test insists on


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A temporary folder as the current directory."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def _params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _put(raw: dict, dotted: str, value: Any) -> dict:
    node = raw
    *parents, last = dotted.split(".")
    for k in parents:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[last] = value
    return raw


def params_error(change: Callable[[dict], Any]) -> Callable[[], str]:
    """The one-line error of ``python -m bcos_lib.core.config`` (what every stage checks first) for
    the project's params.yaml with ``change`` applied."""
    def run() -> str:
        from bcos_lib.core.config import ConfigError, load_params
        raw = _params()
        change(raw)
        with scratch():
            Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            try:
                load_params(Path("params.yaml"))
            except ConfigError as e:
                return " ".join(str(e).split())
        raise AssertionError("no ConfigError")
    return run


def setting(dotted: str, value: Any) -> Callable[[], str]:
    return params_error(lambda raw: _put(raw, dotted, value))


def add_model(key: str) -> Callable[[], str]:
    return params_error(lambda raw: raw["models"].__setitem__(key, {"arch": "std_cnn"}))


def add_profile(name: str) -> Callable[[], str]:
    return params_error(lambda raw: raw["profiles"].__setitem__(name, {}))


def truncated_data_file() -> str:
    from bcos_lib.core.data import FASHION_MNIST_FILES, DataError, verify_fashion_mnist
    with scratch():
        folder = Path("data/fashion-mnist")
        folder.mkdir(parents=True)
        for name, (_, size) in FASHION_MNIST_FILES.items():
            with open(folder / name, "wb") as f:   # the right size (sparse), so that only the damaged file is named
                f.truncate(size if name != "t10k-labels-idx1-ubyte" else 5000)
        try:
            verify_fashion_mnist(folder, check_hash=False)
        except DataError as e:
            return " ".join(str(e).split())
    raise AssertionError("no DataError")


def output_folder_not_writable() -> str:
    from bcos_lib.runner import OutputNotWritable, run_notebook
    with scratch():
        Path("results").write_text("a file where the results folder should be")
        try:
            run_notebook(REPO / "notebooks" / "10_data.ipynb", "results/notebooks/10_data.ipynb", {})
        except OutputNotWritable as e:
            return f"error: {e} (nothing was run)"
    raise AssertionError("no OutputNotWritable")


def checkpoint_of_other_code() -> str:
    """A training killed, the code changed, the stage rerun: the log line of the rerun."""
    import torch

    from bcos_lib import create_model
    from bcos_lib.core.config import TrainConfig
    from bcos_lib.core.data import ImageDataset
    from bcos_lib.train import fit

    class Stop(Exception):
        pass

    def stop(step: int) -> None:
        if step == 2:
            raise Stop

    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g),
                      tuple(str(i) for i in range(10)))
    cfg = TrainConfig(epochs=1, batch_size=16, checkpoint_every=1)
    logs: list[str] = []
    with scratch():
        for code, on_step in (("old", stop), ("new", None)):
            model = create_model("std_cnn", channels=[4, 4], strides=[1, 2])
            with contextlib.suppress(Stop):
                fit(model, ds, None, cfg, checkpoint_path="x.ckpt", fingerprint={"settings": "s", "code": code},
                    checkpoint_name="checkpoints/std_cnn.ckpt", progress=False, log=logs.append, on_step=on_step)
    return next(line for line in logs if line.startswith("discarding"))


def repro_with_another_profile() -> str:
    import importlib.util
    spec = importlib.util.spec_from_file_location("repro_notice", REPO / "scripts" / "repro_notice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return " ".join(module.notice("tiny", "default", 52).split()) + \
        " — stopped: nothing was changed. To go on: make repro PROFILE=tiny CONFIRM=1"


CASES: list[Case] = [
    Case("params.yaml", "a misspelt key: `train: {epoch: 4}`", setting("train.epoch", 4), "unknown key train.epoch"),
    Case("params.yaml", "a wrong type: `train: {epochs: four}`", setting("train.epochs", "four"),
         "train.epochs: expected an integer"),
    Case("params.yaml", "a negative learning rate", setting("train.lr", -0.001), "train.lr must be > 0"),
    Case("params.yaml", "a negative weight decay", setting("train.weight_decay", -0.1), "train.weight_decay must be ≥ 0"),
    Case("params.yaml", "a learning rate that is not a number (`.nan`)", setting("train.lr", float("nan")),
         "train.lr: expected a finite number"),
    Case("params.yaml", "0 epochs for one model", setting("models.std_cnn.train.epochs", 0),
         "models.std_cnn.train.epochs must be ≥ 1"),
    Case("params.yaml", "a batch size of 0 for one model", setting("models.std_cnn.train.batch_size", 0),
         "models.std_cnn.train.batch_size must be ≥ 1"),
    Case("params.yaml", "a bad value in a profile", setting("profiles.tiny.evaluate.n_grids", 0),
         "in profile 'tiny' (profiles.tiny): evaluate.n_grids must be ≥ 1"),
    Case("params.yaml", "a method option out of range", setting("models.lwta_cnn.options.temperature", 0.0),
         "models.lwta_cnn.options.temperature must be > 0"),
    Case("params.yaml", "a metric option out of range", setting("evaluate.options.road.percentages", [0, 50]),
         "evaluate.options.road.percentages[0] must be > 0 and < 100"),
    Case("params.yaml", "an infinite builder argument (`.inf`)", setting("models.bcos_cnn.kwargs.b", float("inf")),
         "models.bcos_cnn.kwargs.b: expected a finite number"),
    Case("params.yaml", "an unknown optimiser for one model", setting("models.std_cnn.train.optimizer", "adamw"),
         "models.std_cnn.train.optimizer: 'adamw' is not allowed"),
    Case("params.yaml", "an unknown architecture", setting("models.std_cnn.arch", "std_cnnn"),
         "models.std_cnn.arch: unknown model 'std_cnnn'"),
    Case("params.yaml", "an unknown profile", setting("base.profile", "huge"), "unknown profile 'huge'"),
    Case("params.yaml", "a model key with shell characters", add_model("inj$(touch X)"),
         "the model key 'inj$(touch X)' is not allowed"),
    Case("params.yaml", "a model key with a space", add_model("my model"), "the model key 'my model' is not allowed"),
    Case("params.yaml", "a profile name with a space", add_profile("my profile"),
         "the profile name 'my profile' is not allowed"),
    Case("data", "a truncated Fashion-MNIST file (the data stage, before DVC records anything)", truncated_data_file,
         "t10k-labels-idx1-ubyte has 5000 bytes"),
    Case("running", "an output folder that cannot be written", output_folder_not_writable,
         "cannot write the executed notebook results/notebooks/10_data.ipynb"),
    Case("running", "a training killed, the code changed, the stage rerun (its log line)", checkpoint_of_other_code,
         "discarding checkpoints/std_cnn.ckpt: it was written with other code"),
    Case("running", "`make repro PROFILE=tiny` without `CONFIRM=1`, not at a terminal", repro_with_another_profile,
         "It overwrites the committed results"),
]

HEADER = """\
# Bad input and what it says

<!-- GENERATED by `python scripts/bad_input_doc.py` from the cases that tests/bad_input_cases.py tries
     (tests/test_bad_input_doc.py checks that this page is current): do not edit by hand -->

Each mistake below is refused before anything is written, with one message that names the key,
file or folder and what to do; the results of an earlier run stay as they were. (A training
checkpoint written by other code is not an error: it is discarded with the log line shown, and
the training starts afresh.) The messages are the project's own; a stage prints them after
`error:`, and paths are relative to the project. The numbers in `params.yaml` are checked for
type and range at every level (sections, profiles, each model's overrides, its method's options
and each metric's options) when the file is read, so a stage never starts with a value it
cannot use.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(messages: dict[str, str]) -> str:
    """The page, from each case's message (by ``what``)."""
    out = [HEADER]
    group = None
    for case in CASES:
        if case.group != group:
            group = case.group
            out.append(f"\n## {group}\n\n| what was done | what the project says |\n|---|---|")
        out.append(f"| {_cell(case.what)} | `` {_cell(messages[case.what])} `` |")
    return "\n".join(out) + "\n"


def messages() -> dict[str, str]:
    return {case.what: case.run() for case in CASES}
