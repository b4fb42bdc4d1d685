"""Dataset loaders: the embedded Fashion-MNIST, and CIFAR-10 / ImageFolder on tiny files written here."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from bcos_lib.core.data import (FASHION_MNIST_CLASSES, DataError, ImageDataset, fetch_fashion_mnist, load_cifar10, load_dataset, load_fashion_mnist, load_image_folder, read_idx, subset)
from bcos_lib.core.paths import project_root

FMNIST = project_root() / "data" / "fashion-mnist"


def _write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), a)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="run `make data` first")
def test_embedded_fashion_mnist_is_the_real_release():
    test = load_fashion_mnist(FMNIST, "test")
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.float32
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes == FASHION_MNIST_CLASSES
    assert len(load_fashion_mnist(FMNIST, "train", check_hash=False)) == 60_000


def test_fetch_decompresses_from_a_source_folder_and_checks_hashes(tmp_path):
    """A folder of .gz files that are *not* the release is copied, then rejected by the hash check."""
    src = tmp_path / "src"
    src.mkdir()
    for name, n in [("train-images-idx3-ubyte", 5), ("t10k-images-idx3-ubyte", 3)]:
        _write_idx(src / (name + ".gz"), np.zeros((n, 28, 28)), compress=True)
    for name, n in [("train-labels-idx1-ubyte", 5), ("t10k-labels-idx1-ubyte", 3)]:
        _write_idx(src / (name + ".gz"), np.zeros((n,)), compress=True)
    with pytest.raises(DataError, match="expected"):
        fetch_fashion_mnist(tmp_path / "dest", source=src, allow_download=False)
    assert (tmp_path / "dest" / "t10k-labels-idx1-ubyte").read_bytes()[:4] == bytes([0, 0, 8, 1])  # decompressed


def test_cifar10_loader_on_tiny_batches(tmp_path):
    root = tmp_path / "cifar"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle.dump({"label_names": names}, open(folder / "batches.meta", "wb"))
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8)
        pickle.dump({"data": data, "labels": [(i + j) % 10 for j in range(4)]}, open(folder / name, "wb"))
    train, test = load_cifar10(root, "train", check_integrity=False), load_cifar10(root, "test", check_integrity=False)
    with pytest.raises(DataError, match="not the CIFAR-10 release"):
        load_cifar10(root, "train")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.classes == tuple(names) and train.labels.dtype == torch.int64
    assert 0 <= float(train.images.min()) and float(train.images.max()) <= 1
    # the first image round-trips from the (N, 3072) row layout
    raw = pickle.load(open(folder / "test_batch", "rb"))["data"][0].reshape(3, 32, 32) / 255
    np.testing.assert_allclose(test.images[0].numpy(), raw, atol=1e-6)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path / "nothing", "train")


def test_image_folder_loader_on_tiny_pngs(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for c, colour in [("cats", (255, 0, 0)), ("dogs", (0, 0, 255))]:
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (40, 30), colour).save(d / f"{k}.png")
    ds = load_dataset("image_folder", tmp_path, "train", image_size=16)
    assert ds.images.shape == (4, 3, 16, 16) and ds.classes == ("cats", "dogs")
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert torch.allclose(ds.images[0, 0], torch.ones(16, 16)) and float(ds.images[0, 2].max()) == 0.0
    grey = load_image_folder(tmp_path, "test", image_size=8, grey=True)
    assert grey.images.shape == (4, 1, 8, 8)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path, "val")


def test_subset_is_seeded_and_keeps_order():
    ds = ImageDataset(torch.rand(50, 1, 4, 4), torch.arange(50) % 10, tuple("abcdefghij"))
    a, b = subset(ds, 20, seed=1), subset(ds, 20, seed=1)
    assert torch.equal(a.labels, b.labels) and len(a) == 20
    assert not torch.equal(a.images, subset(ds, 20, seed=2).images)
    assert subset(ds, 0) is ds
