"""Datasets: the embedded Fashion-MNIST, CIFAR-10 and any ImageFolder tree.

Every loader returns an :class:`ImageDataset`: images as float tensors in [0, 1],
(N, C, H, W), integer labels and class names.  Only the thin edge reads files.

Fashion-MNIST (Xiao et al. 2017, MIT licence) is the embedded default: the Debian
package ``dataset-fashion-mnist`` ships it under /usr/share/datasets/fashion-mnist/.
Its ``.gz`` archives are recompressed, so the hashes below are of the *decompressed*
IDX files, which are what ``data/fashion-mnist/`` holds (the data stage checks them before DVC records the
folder as its dependency).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .utils import atomic_write

__all__ = ["ImageDataset", "DataError", "FASHION_MNIST_FILES", "FASHION_MNIST_CLASSES", "FMNIST_MEAN", "FMNIST_STD", "fetch_fashion_mnist",
           "verify_fashion_mnist", "load_fashion_mnist", "load_cifar10", "load_image_folder", "load_dataset",
           "read_idx", "subset", "DEBIAN_DIR"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: decompressed file name → (md5, size in bytes)
FASHION_MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 47040016),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60008),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 7840016),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10008),
}
#: Fashion-MNIST's pixel statistics (the conventional models' Normalize layer); other data pass their own
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

HOW_TO_GET = ("Get the data with `make data` (it runs `python -m bcos_lib.core.data fetch`, which copies it from the "
              "Debian package dataset-fashion-mnist, installed with `apt-get install dataset-fashion-mnist`, "
              "or downloads it when the machine is online).")


class DataError(RuntimeError):
    """A dataset is missing, truncated or not the expected one."""


@dataclass
class ImageDataset:
    """Images in [0, 1] as (N, C, H, W) float32, labels as (N,) int64."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_channels(self) -> int:
        return self.images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def subset(ds: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """A class-stratified-by-chance random subset of ``n`` items (all when n ≤ 0 or n ≥ len)."""
    if n <= 0 or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return ImageDataset(ds.images[idx], ds.labels[idx], ds.classes)


# ----------------------------------------------------------------------------- Fashion-MNIST
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_fashion_mnist(root: str | os.PathLike, check_hash: bool = True) -> None:
    """Raise :class:`DataError` naming the problem unless ``root`` holds the exact four files."""
    root = Path(root)
    problems = []
    for name, (md5, size) in FASHION_MNIST_FILES.items():
        p = root / name
        if not p.is_file():
            problems.append(f"{p} is missing")
        elif p.stat().st_size != size:
            problems.append(f"{p} has {p.stat().st_size} bytes, expected {size} (truncated or a different file)")
        elif check_hash and _md5(p) != md5:
            problems.append(f"{p} has md5 {_md5(p)}, expected {md5} (not the Fashion-MNIST release)")
    if problems:
        raise DataError("Fashion-MNIST in " + str(root) + " is not usable:\n  - " + "\n  - ".join(problems)
                        + "\n" + HOW_TO_GET + " Delete a damaged folder first; `fetch` replaces wrong files.")


def fetch_fashion_mnist(dest: str | os.PathLike, source: str | os.PathLike | None = None,
                        allow_download: bool = True) -> Path:
    """Put the four decompressed IDX files into ``dest`` (idempotent) and verify them.

    Source order: ``source`` (a folder of .gz or raw files), the Debian package folder,
    then the canonical download.  Each file is written to a temporary name and renamed,
    so an interrupted fetch never leaves a truncated file behind.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = [Path(source)] if source is not None else [DEBIAN_DIR]
    for name, (md5, size) in FASHION_MNIST_FILES.items():
        target = dest / name
        if target.is_file() and target.stat().st_size == size and _md5(target) == md5:
            continue
        for src_dir in sources:
            raw, gz = src_dir / name, src_dir / (name + ".gz")
            if raw.is_file() or gz.is_file():
                _atomic_copy(raw if raw.is_file() else gz, target, decompress=not raw.is_file())
                break
        else:
            if not allow_download:
                raise DataError(f"{name} is in none of {[str(s) for s in sources]}. " + HOW_TO_GET)
            try:
                with urllib.request.urlopen(DOWNLOAD_URL + name + ".gz", timeout=30) as r, \
                        tempfile.NamedTemporaryFile(delete=False, suffix=".gz") as tmp:
                    shutil.copyfileobj(r, tmp)
                _atomic_copy(Path(tmp.name), target, decompress=True)
                os.unlink(tmp.name)
            except OSError as e:
                raise DataError(f"could not download {name} from {DOWNLOAD_URL} ({e}). "
                                "Offline: apt-get install dataset-fashion-mnist, then `make data`.") from e
    verify_fashion_mnist(dest)
    return dest


def _atomic_copy(src: Path, target: Path, decompress: bool) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as out, (gzip.open(src, "rb") if decompress else open(src, "rb")) as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
    atomic_write(target, write)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dims, big-endian uint8 data."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {body.size} values")
    return body.reshape(dims)


def load_fashion_mnist(root: str | os.PathLike, split: str = "train", check_hash: bool = True) -> ImageDataset:
    """Fashion-MNIST ``train`` (60 000) or ``test`` (10 000) from the decompressed IDX files in ``root``."""
    verify_fashion_mnist(root, check_hash=check_hash)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(Path(root) / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(Path(root) / f"{prefix}-labels-idx1-ubyte")
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return ImageDataset(x, torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------- user data
def load_cifar10(root: str | os.PathLike, split: str = "train", download: bool = False,
                 check_integrity: bool = True) -> ImageDataset:
    """CIFAR-10 in torchvision's format (``cifar-10-batches-py`` under ``root``).

    ``download`` fetches it with torchvision (online machines); ``check_integrity`` verifies
    the release's md5 sums with torchvision (tests switch it off for their tiny files).
    """
    import pickle

    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity as md5_ok
    folder = Path(root) / CIFAR10.base_folder
    if download:
        CIFAR10(str(root), train=split == "train", download=True)
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 not found: {folder} does not exist. Put torchvision's cifar-10-batches-py folder "
                        f"under {root}, or set download: true on a machine that is online.")
    if check_integrity and not all(md5_ok(str(folder / name), md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list):
        raise DataError(f"{folder} is not the CIFAR-10 release (md5 mismatch or missing batches): download it again")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.extend(entry.get("labels", entry.get("fine_labels", [])))
    with open(folder / "batches.meta", "rb") as f:
        classes = tuple(pickle.load(f, encoding="latin1")["label_names"])
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255)
    return ImageDataset(x, torch.tensor(ys, dtype=torch.int64), classes)


def load_image_folder(root: str | os.PathLike, split: str = "train", image_size: int = 64,
                      grey: bool = False) -> ImageDataset:
    """Any ``root/<split>/<class>/<image>`` tree, resized to ``image_size`` (short side) and centre-cropped."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist: an ImageFolder dataset needs {root}/{split}/<class>/<image files>")
    tf = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    if grey:
        tf.append(transforms.Grayscale(1))
    ds = ImageFolder(str(folder), transform=transforms.Compose(tf + [transforms.ToTensor()]))
    if len(ds) == 0:
        raise DataError(f"{folder} holds no images")
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return ImageDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), tuple(ds.classes))


#: how tables and figures name each dataset of params.yaml's ``data.dataset``
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "image_folder": "the image folder"}


def load_dataset(name: str, root: str | os.PathLike, split: str, **kw) -> ImageDataset:
    """Dispatch on the dataset name used in params.yaml."""
    loaders = {"fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10, "image_folder": load_image_folder}
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(loaders)}")
    return loaders[name](root, split, **kw)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bcos_lib.core.data fetch [DEST] [--source DIR]`` / ``verify [DEST]``."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m bcos_lib.core.data", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["fetch", "verify"])
    ap.add_argument("dest", nargs="?", default=None, help="default: <project>/data/fashion-mnist")
    ap.add_argument("--source", default=None, help="a folder with the .gz or raw IDX files")
    ap.add_argument("--offline", action="store_true", help="never download")
    a = ap.parse_args(argv)
    from .paths import project_root
    dest = Path(a.dest) if a.dest else project_root() / "data" / "fashion-mnist"
    try:
        if a.command == "fetch":
            fetch_fashion_mnist(dest, a.source, allow_download=not a.offline)
        else:
            verify_fashion_mnist(dest)
    except DataError as e:
        print(f"error: {e}", flush=True)
        return 1
    print(f"Fashion-MNIST OK in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
