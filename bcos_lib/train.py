"""Training: ``fit(model, train_data, test_data, cfg) -> history``, resumable and deterministic.

The data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), and the learning rate is a pure function of the global step, so a run
killed mid-epoch resumes from its last checkpoint (model, optimiser, RNG state, the
epoch's running sums) and ends with exactly the same numbers as an uninterrupted run.
Checkpoints are written atomically (temporary file + rename).

Two hardware options of ``train``: ``channels_last`` (the NHWC memory layout for model and
batches) and ``precision: bf16`` (the training step's forward under ``torch.autocast`` in
bfloat16, on CPU and GPU; weights, optimiser and loss stay float32).  ``make bench``
measures both against the default.

``compile: true`` runs the training step's forward through ``torch.compile`` (TorchInductor:
fused C++/OpenMP kernels on the CPU, Triton on a GPU).  Its kernels are cached under the
project's ``.cache/inductor`` (:func:`compiled`), so a rerun loads them instead of compiling
again; where compilation is unavailable (no C++ compiler, an unsupported platform) the step
runs eagerly and one log line says so.  The weights and explanations are those of the eager
model: compilation changes the order of floating-point operations, not the computation.

Under ``torchrun`` (the environment names a WORLD_SIZE > 1) ``fit`` trains data-parallel
with PyTorch's DistributedDataParallel (NCCL on GPUs, gloo on CPUs): every rank draws the
same global batch and takes its shard of it, gradients are averaged weighted by the shard
sizes, and the epoch's sums are added over the ranks, so that the weights and the history
equal a single-process run on the same global batch (to float tolerance; batch-norm
statistics are those of each shard, as in any data-parallel run without synchronised batch
norm).  Only rank 0 writes checkpoints and logs; :func:`is_main_process` tells the caller
whether to write its outputs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core.config import TrainConfig
from .core.data import ImageDataset
from .core.contract import StepInfo, StepOutput, TrainHooks
from .models.base import prepare_input
from .core.utils import UnsafeFileError, atomic_torch_save, evaluating, safe_torch_load

__all__ = ["fit", "compiled", "compile_cache", "compile_unavailable", "evaluate_accuracy", "loss_fn", "LOSSES", "default_step", "TrainingError", "batches",
           "config_fingerprint", "load_train_checkpoint", "CHECKPOINT_FORMAT", "init_distributed",
           "is_main_process"]

CHECKPOINT_FORMAT = "bcos-companion/train-checkpoint-v1"


class TrainingError(RuntimeError):
    """Training cannot go on (NaN/Inf loss, …); the message names the step and the likely cause."""


_PART_NAMES = {"settings": "other settings (params.yaml)",
               "code": "other code (bcos_lib, the stage notebook, the model it starts from or torch changed)"}


def _why_not_resumed(old: Any, new: Any) -> str:
    """Why a checkpoint with fingerprint ``old`` is not resumed by a run with ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [_PART_NAMES.get(k, k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return "it was written with " + " and ".join(parts)
    if isinstance(new, dict):
        return "it was written by an older version that did not record its code"
    return "it belongs to another configuration"


def config_fingerprint(*parts: Any) -> str:
    """A short hash of everything that decides a run (a checkpoint is resumed only if it matches)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _bce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


#: the losses ``train.loss`` may name: ``bce``, binary cross-entropy on one-hot targets (B-cos v1
#: §3.4: every logit is pushed up or down on its own); ``ce``, cross-entropy.  A method that needs
#: another adds it here before params.yaml is read (its module is imported by then).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"bce": _bce, "ce": F.cross_entropy}


def loss_fn(name: str, logits: Tensor, labels: Tensor) -> Tensor:
    """The loss ``name`` (a key of :data:`LOSSES`) of ``logits`` for ``labels``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} ({', '.join(LOSSES)})")
    return LOSSES[name](logits, labels)


def default_step(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> StepOutput:
    """The plain training step: the run's loss of ``model(prepare_input(x))`` against ``y``.
    A method's step (:class:`bcos_lib.methods.TrainHooks`) may call this and add its own terms."""
    out = model(prepare_input(model, x))
    return StepOutput(loss=loss_fn(info.loss_name, out, y), logits=out)


def batches(ds: ImageDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
            epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of an in-memory dataset; the order of a shuffled epoch depends only on (seed, epoch)."""
    n = len(ds)
    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
             if shuffle else torch.arange(n))
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield ds.images[idx], ds.labels[idx]


def init_distributed() -> tuple[int, int]:
    """(rank, world size); under ``torchrun`` (WORLD_SIZE > 1 in the environment) this starts the
    process group once: NCCL when CUDA is available, gloo otherwise."""
    import torch.distributed as dist
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 of a data-parallel run (which writes nothing)."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class _DataParallel(nn.parallel.DistributedDataParallel):
    """DDP that lets a method's step read the model's own attributes (``encoding``, …)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def compile_cache() -> Path:
    """Where TorchInductor keeps its compiled kernels: ``.cache/inductor`` under the project root
    (git-ignored).  ``TORCHINDUCTOR_CACHE_DIR``, when set, wins."""
    from .core.paths import project_root
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or project_root() / ".cache" / "inductor")


def compile_unavailable() -> str:
    """Why ``torch.compile`` cannot run here ("" when it can): Inductor's CPU kernels need a C++
    compiler; Windows and Python builds without ``torch._dynamo`` support have none of it."""
    import importlib
    import shutil
    # before torch._dynamo imports Inductor: its first look at the cache folder fixes it for the process
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache()))
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        importlib.import_module("torch._dynamo")
    except Exception as e:  # noqa: BLE001 - any failure to import means: not here
        return f"torch._dynamo does not import ({type(e).__name__}: {e})"
    if sys.platform.startswith("win"):
        return "TorchInductor's CPU backend is not supported on Windows"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        return "no C++ compiler (g++, c++ or clang++) on PATH"
    return ""


_COMPILE_WARNED: set[str] = set()


def compiled(net: nn.Module, log: Callable[[str], None] = print) -> nn.Module:
    """``torch.compile(net)`` with the kernel cache under the project, or ``net`` itself, with one
    log line per reason, where compiling is unavailable (:func:`compile_unavailable`).  The
    compiled module shares ``net``'s parameters; a frame Dynamo cannot compile runs eagerly."""
    why = compile_unavailable()
    if why:
        if why not in _COMPILE_WARNED:
            _COMPILE_WARNED.add(why)
            log(f"train.compile: {why}; training runs eagerly (same numbers up to float rounding, slower)")
        return net
    torch._dynamo.config.suppress_errors = True   # a graph Dynamo cannot compile runs eagerly
    return torch.compile(net, dynamic=False)


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, ds: ImageDataset, loss: str = "ce", batch_size: int = 1000,
                      device: torch.device | str = "cpu", keep_logits: bool = False) -> dict[str, Any]:
    """Mean loss and accuracy (%) of ``model`` on ``ds`` (eval mode; the mode is restored); with
    ``keep_logits`` also ``"logits"``, the (N, classes) float32 logits on the CPU."""
    total_loss, correct, kept = 0.0, 0, []
    with evaluating(model):
        for x, y in batches(ds, batch_size):
            x, y = x.to(device), y.to(device)
            out = model(prepare_input(model, x))
            total_loss += loss_fn(loss, out, y).item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            if keep_logits:
                kept.append(out.detach().float().cpu())
    result: dict[str, Any] = {"loss": total_loss / len(ds), "accuracy": 100.0 * correct / len(ds)}
    if keep_logits:
        result["logits"] = torch.cat(kept) if kept else torch.zeros(0, 0)
    return result


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _diagnose(model: nn.Module, x: Tensor, cfg: TrainConfig, loss_name: str) -> str:
    if not torch.isfinite(x).all():
        return "the input batch itself contains NaN/Inf: check the dataset files"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        return f"parameters became non-finite ({', '.join(bad[:3])}): the learning rate {cfg.lr:g} is likely too high"
    return f"the loss overflowed: lower the learning rate ({cfg.lr:g}) or check the loss ({loss_name})"


def fit(model: nn.Module, train_data: ImageDataset, test_data: ImageDataset | None, cfg: TrainConfig, *,
        seed: int = 0, device: torch.device | str = "cpu", checkpoint_path: str | os.PathLike | None = None,
        fingerprint: str | dict[str, str] = "", checkpoint_name: str | None = None, progress: bool = True,
        log: Callable[[str], None] = print,
        on_step: Callable[[int], None] | None = None, on_test: Callable[[int, Tensor], None] | None = None,
        hooks: TrainHooks | None = None,
        epoch_eval: Callable[[nn.Module], dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place; return one row of metrics per epoch.

    With ``test_data``, the rows have ``test_loss`` and ``test_accuracy``: measured after every
    ``cfg.test_every``-th epoch and after the last, NaN on the other rows (``test_every`` 0: the
    last only, which saves a pass over the test set per epoch where no curve is read).
    ``on_test(epoch, logits)`` receives the logits of each of these passes (the train stage keeps
    the last with the model, so that the evaluate stage need not compute them again).

    ``hooks`` (:class:`bcos_lib.methods.TrainHooks`, from the model's method) may replace the
    training step — it gets the labels and may add loss terms, logged per epoch — and add an
    after-step hook.  ``epoch_eval(model) -> {column: number}`` adds columns to each epoch's row
    (it must leave the model as it found it).  With ``checkpoint_path`` a checkpoint is written
    every ``cfg.checkpoint_every`` steps and at each epoch's end; an existing checkpoint with the same ``fingerprint`` is resumed,
    one with another fingerprint is deleted with a log line that says why (and training starts
    afresh).  ``fingerprint`` may be a mapping of parts (``{"settings": …, "code": …}``): the log
    line then names the parts that differ.  ``checkpoint_name``: how log lines show the path
    (default: the path itself).
    """
    from tqdm import tqdm

    rank, world = init_distributed()
    device = torch.device(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if rank != 0:
        progress, log = False, (lambda s: None)
    loss_name = getattr(model, "default_loss", "ce") if cfg.loss == "auto" else cfg.loss
    opt = _make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    hooks = hooks or TrainHooks()
    step_fn = hooks.step or default_step
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [], "sums": [0.0, 0, 0], "terms": {}}
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        ck = load_train_checkpoint(checkpoint_path)
        shown = checkpoint_name or checkpoint_path
        if ck.get("fingerprint") == fingerprint:
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:  # the code changed since the checkpoint was written
                raise TrainingError(f"training checkpoint {checkpoint_path} does not fit this model or optimiser "
                                    f"({str(e).splitlines()[0]}); delete it to start the training afresh") from e
            torch.set_rng_state(ck["rng"])
            if ck.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ck["cuda_rng"])
            state = ck["state"]
            state.setdefault("terms", {})
            log(f"resuming from {shown}: epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")
        else:
            log(f"discarding {shown}: {_why_not_resumed(ck.get('fingerprint'), fingerprint)}; training starts afresh")
            Path(checkpoint_path).unlink(missing_ok=True)

    # data parallel: one DDP wrapper for the forward passes of the step (it averages the gradients);
    # hooks that change weights (after_step) get the model itself
    if world > 1:
        if len(train_data) % cfg.batch_size and len(train_data) % cfg.batch_size < world:
            raise TrainingError(f"the last batch of an epoch holds {len(train_data) % cfg.batch_size} images, fewer "
                                f"than the {world} processes: change train.batch_size or the subset size")
        if cfg.batch_size < world:
            raise TrainingError(f"train.batch_size {cfg.batch_size} is smaller than the {world} processes")
        net = _DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model
    if cfg.compile:
        net = compiled(net, log)

    def save_checkpoint() -> None:
        if checkpoint_path is not None and rank == 0:
            atomic_torch_save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "model": model.state_dict(),
                               "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                               "state": state},
                              checkpoint_path)

    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        model.train()
        it = batches(train_data, cfg.batch_size, shuffle=True, seed=seed, epoch=epoch)
        bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, file=sys.stdout, mininterval=5, leave=False)
        for i, (x, y) in enumerate(it):
            if i < state["step_in_epoch"]:
                continue  # already done before the interruption
            n_global = len(y)
            if world > 1:   # this rank's shard of the global batch
                x, y = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
            x, y = x.to(device), y.to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if not torch.isfinite(x).all():
                raise TrainingError(f"the training batch at epoch {epoch + 1}, step {i + 1} contains NaN/Inf: "
                                    "the input batch itself is damaged; check the dataset files (make data)")
            for group in opt.param_groups:
                group["lr"] = _lr_at(state["global_step"], total, cfg)
            info = StepInfo(epoch=epoch, step=state["global_step"], epochs=cfg.epochs, total_steps=total,
                            loss_name=loss_name)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                result = step_fn(net, x, y, info)
            loss, out = result.loss, result.logits
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1} "
                                    f"(global step {state['global_step'] + 1}): {_diagnose(model, x, cfg, loss_name)}")
            opt.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; weighting each by its shard's share makes the
            # average that of the global batch's mean loss when the shards differ in size
            (loss * (len(y) * world / n_global) if world > 1 else loss).backward()
            opt.step()
            if hooks.after_step is not None:
                with torch.no_grad():
                    hooks.after_step(model, info)
            names = sorted(result.terms)
            sums = torch.tensor([loss.item() * len(y), (out.argmax(1) == y).sum().item(), len(y)]
                                + [float(result.terms[k]) * len(y) for k in names], dtype=torch.float64)
            if world > 1:   # every rank keeps the global sums (a resumed run reads rank 0's)
                import torch.distributed as dist
                sums = sums.to(device)
                dist.all_reduce(sums)
                sums = sums.cpu()
            for name, value in zip(names, sums[3:].tolist()):
                state["terms"][name] = state["terms"].get(name, 0.0) + value
            state["sums"][0] += sums[0].item()
            state["sums"][1] += int(sums[1].item())
            state["sums"][2] += int(sums[2].item())
            state["step_in_epoch"] = i + 1
            state["global_step"] += 1
            bar.update(1)
            if state["global_step"] % cfg.checkpoint_every == 0:
                save_checkpoint()
            if on_step is not None:
                on_step(state["global_step"])
        bar.close()
        s = state["sums"]
        row = {"epoch": epoch + 1, "train_loss": s[0] / s[2], "train_accuracy": 100.0 * s[1] / s[2],
               "lr": _lr_at(state["global_step"] - 1, total, cfg),
               **{f"train_{k}": v / s[2] for k, v in state.get("terms", {}).items()}}
        if test_data is not None:   # the columns on every row (empty where this epoch was not tested)
            tested = epoch + 1 == cfg.epochs or (cfg.test_every > 0 and (epoch + 1) % cfg.test_every == 0)
            m = evaluate_accuracy(model, test_data, loss_name, cfg.eval_batch_size, device,
                                  keep_logits=on_test is not None) if tested else {}
            row.update(test_loss=m.get("loss", math.nan), test_accuracy=m.get("accuracy", math.nan))
            if tested and on_test is not None:
                on_test(epoch + 1, m["logits"])
        if hooks.after_epoch is not None:
            info = StepInfo(epoch=epoch, step=state["global_step"] - 1, epochs=cfg.epochs, total_steps=total,
                            loss_name=loss_name)
            with evaluating(model):
                row.update({k: float(v) for k, v in hooks.after_epoch(model, info).items()})
        if epoch_eval is not None:  # e.g. localisation after every epoch (train.epoch_metrics)
            with evaluating(model):
                row.update(epoch_eval(model))
        state["history"].append(row)
        # no wall time here: the executed notebook keeps this line, and a rerun must write the same bytes
        log(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                            if k != "epoch" and not math.isnan(v)))
        state.update(epoch=epoch + 1, step_in_epoch=0, sums=[0.0, 0, 0], terms={})
        save_checkpoint()
    return state["history"]


def load_train_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint, with a clear error when it is damaged."""
    try:
        ck = safe_torch_load(path)
    except UnsafeFileError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for damaged files
        raise TrainingError(f"training checkpoint {path} is corrupted or truncated ({type(e).__name__}: {e}); "
                            "delete it to start the training afresh") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a bcos-companion training checkpoint; delete it to start afresh")
    missing = [k for k in ("fingerprint", "model", "optimizer", "rng", "state") if k not in ck]
    if missing:
        raise TrainingError(f"training checkpoint {path} is incomplete (no {', '.join(missing)}); "
                            "delete it to start the training afresh")
    return ck
