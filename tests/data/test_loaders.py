"""Each loader format, built in the test itself in the standard layouts, gives the same images."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advpure.data import CIFAR10_CLASSES, load_dataset, load_folder_dataset, subset_indices
from advpure.data.folders import _safe_unpickle

N_PER_BATCH = 6  # images per batch file in the synthetic CIFAR-10


def _synthetic(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def _write_python_batches(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root.mkdir(parents=True)
    parts = {"train": [], "test": []}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = _synthetic(i, N_PER_BATCH)
        # the real files are pickles of {b'data': (n, 3072) uint8, b'labels': [int], ...} (protocol 2, bytes keys)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": x.reshape(N_PER_BATCH, -1), b"labels": y.tolist(), b"batch_label": name.encode()}, f,
                        protocol=2)
        parts["test" if name == "test_batch" else "train"].append((x, y))
    return {s: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for s, v in parts.items()}


def _write_folder(root: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for split, (x, y) in arrays.items():
        for c in CIFAR10_CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, lab) in enumerate(zip(x, y)):
            Image.fromarray(img.transpose(1, 2, 0)).save(root / split / CIFAR10_CLASSES[lab] / f"{i:04d}.png")


def _tar(src: Path, dst: Path, arcname: str) -> Path:
    with tarfile.open(dst, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dst


def _sorted_by_label(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # image folders order images by class, then by file name (our file names keep the original order)
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


@pytest.fixture()
def formats(tmp_path):
    arrays = _write_python_batches(tmp_path / "cifar-10-batches-py")
    _tar(tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    _write_folder(tmp_path / "tree" / "cifar10-png", arrays)
    _tar(tmp_path / "tree" / "cifar10-png", tmp_path / "cifar10-png.tar.gz", "cifar10-png")
    return tmp_path, arrays


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_format_gives_the_same_images(formats, split):
    root, arrays = formats
    x_ref, y_ref = arrays[split]
    for src in (root / "cifar-10-batches-py", root, root / "cifar-10-python.tar.gz"):
        ds = load_dataset("cifar10", split, data_dir=src)
        assert ds.images.dtype == torch.uint8 and ds.shape == (3, 32, 32)
        np.testing.assert_array_equal(ds.images.numpy(), x_ref)
        np.testing.assert_array_equal(ds.labels.numpy(), y_ref)
        assert ds.classes == CIFAR10_CLASSES
    xs, ys = _sorted_by_label(x_ref, y_ref)
    for src in (root / "tree", root / "tree" / "cifar10-png", root / "cifar10-png.tar.gz"):
        ds = load_dataset("cifar10", split, data_dir=src)
        np.testing.assert_array_equal(ds.labels.numpy(), ys)
        np.testing.assert_array_equal(ds.images.numpy(), xs)


def test_float_batches_and_cache(formats):
    root, arrays = formats
    ds = load_dataset("cifar10", "test", data_dir=root / "cifar-10-python.tar.gz")
    x, y = ds.tensors()
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.dtype == torch.int64
    torch.testing.assert_close(x * 255, torch.from_numpy(arrays["test"][0]).float())
    # second load comes from the cache file and is identical
    again = load_dataset("cifar10", "test", data_dir=root / "cifar-10-python.tar.gz")
    assert torch.equal(again.images, ds.images)


def test_generic_folder_dataset(tmp_path):
    for split in ("train", "test"):
        for c, v in (("cats", 10), ("dogs", 200)):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((5, 7), v, np.uint8)).save(d / f"{i}.png")
    ds = load_dataset("folder", "train", data_dir=tmp_path)
    assert ds.classes == ["cats", "dogs"] and ds.shape == (1, 5, 7) and len(ds) == 6
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert int(ds.images[0].max()) == 10 and int(ds.images[-1].max()) == 200


def test_mixed_sizes_in_folder_is_an_error(tmp_path):
    for split in ("train",):
        d = tmp_path / split / "a"
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "0.png")
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(d / "1.png")
    with pytest.raises(ValueError, match="different shapes"):
        load_folder_dataset(tmp_path, "train")


def test_malicious_pickle_is_refused():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _safe_unpickle(pickle.dumps({b"data": Evil()}))


def test_digits_split_is_fixed():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(tr), len(te)) == (1347, 450) and tr.shape == (1, 8, 8)
    x, _ = tr.tensors()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(load_dataset("digits", "test").images, te.images)
    total = tr.labels.bincount() + te.labels.bincount()
    assert ((te.labels.bincount() - 0.25 * total).abs() <= 1).all()  # stratified 75/25


def test_subsets_are_seeded_and_nested():
    a = subset_indices(1000, 50, seed=3)
    assert torch.equal(a, subset_indices(1000, 50, seed=3))
    assert not torch.equal(a, subset_indices(1000, 50, seed=4))
    assert set(a.tolist()) <= set(subset_indices(1000, 200, seed=3).tolist())
    assert len(set(a.tolist())) == 50
    with pytest.raises(ValueError, match="exceeds"):
        subset_indices(10, 11, seed=0)


def test_bad_dataset_inputs(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "nowhere")
    monkeypatch.delenv("ADVPURE_CIFAR10", raising=False)
    monkeypatch.delenv("ADVPURE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("cifar10", "test")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no 'test/' folder"):
        load_dataset("folder", "test", data_dir=tmp_path / "empty")


@pytest.mark.shared
def test_shared_cifar10_jpeg(cifar10_jpeg):
    ds = load_dataset("cifar10", "test", data_dir=cifar10_jpeg)
    assert len(ds) == 10_000 and ds.shape == (3, 32, 32)
    assert ds.labels.bincount().tolist() == [1000] * 10
