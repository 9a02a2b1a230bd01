"""ImageNet-style folders: class indices, the torchvision evaluation transform, laziness and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advpure.data import DATASETS, DEFAULT_LINF_EPS, ImageSet, load_dataset, subset_indices
from advpure.data.imagenet import LazyImageSet, decode_image, load_imagenet, read_class_list

WNIDS_1K = [f"n{i:08d}" for i in range(1000)]  # stand-in wnids, in index order


def _save(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG") -> np.ndarray:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
    else:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    if mode == "CMYK":
        im = im.convert("CMYK")
    im.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return a


def _folder(root: Path, wnids: list[str], per_class: int = 2, sizes=((300, 200), (257, 300))) -> Path:
    for c, w in enumerate(wnids):
        for j in range(per_class):
            W, H = sizes[j % len(sizes)]
            _save(root / "val" / w / f"ILSVRC2012_val_{c:04d}{j}.JPEG", W, H, seed=10 * c + j)
    return root


def test_transform_is_resize_shorter_side_then_center_crop(tmp_path):
    """torchvision Resize(256) + CenterCrop(224), sizes and offsets worked out by hand."""
    p = tmp_path / "a.png"
    a = _save(p, 300, 200, fmt="PNG")  # w=300, h=200: shorter side h -> 256, w -> int(256*300/200) = 384
    ref = Image.fromarray(a).resize((384, 256), Image.BILINEAR).crop((80, 16, 304, 240))  # left 80, top 16
    out = decode_image(p, 224, 256)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(ref).transpose(2, 0, 1))
    q = tmp_path / "b.png"
    b = _save(q, 257, 300, fmt="PNG")  # w shorter: (256, int(256*300/257) = 298); top round(37.0), left 16
    ref = Image.fromarray(b).resize((256, 298), Image.BILINEAR).crop((16, 37, 240, 261))
    np.testing.assert_array_equal(decode_image(q, 224, 256), np.asarray(ref).transpose(2, 0, 1))
    # the 256 variant (ADM): resize 256 -> crop 256; a 256-pixel shorter side is not resampled
    c = tmp_path / "c.png"
    arr = _save(c, 256, 320, fmt="PNG")
    np.testing.assert_array_equal(decode_image(c, 256, 256), arr[32:288].transpose(2, 0, 1))


def test_load_dataset_imagenet_with_class_list(tmp_path):
    root = _folder(tmp_path / "in", ["n00000007", "n00000003"])
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} some name, other name\n" for w in WNIDS_1K))
    ds = load_dataset("imagenet", "val", data_dir=root)
    assert isinstance(ds, LazyImageSet) and "imagenet" in DATASETS and DEFAULT_LINF_EPS["imagenet"] == 4 / 255
    assert len(ds) == 4 and ds.shape == (3, 224, 224) and ds.num_classes == 1000
    assert ds.labels.tolist() == [3, 3, 7, 7]  # ordered by class index, then file name
    x, y = ds.batch([0, 3])
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [3, 7]
    np.testing.assert_array_equal((x[1] * 255).round().byte().numpy(), decode_image(ds.files[3], 224, 256))
    sub = ds.subset(3, seed=5)
    idx = subset_indices(4, 3, 5)
    assert isinstance(sub, ImageSet) and sub.meta["indices"] == idx.tolist()
    torch.testing.assert_close(sub.tensors()[0], ds.batch(idx)[0])
    assert sub.labels.tolist() == ds.labels[idx].tolist() and sub.meta["subset"] == {"n": 3, "seed": 5}
    # "test" reads val/ (ImageNet's test labels are not public); the variants change the crop only
    assert load_dataset("imagenet", "test", data_dir=root).labels.tolist() == [3, 3, 7, 7]
    assert load_dataset("imagenet256", "val", data_dir=root).batch([0])[0].shape == (1, 3, 256, 256)
    assert load_dataset("imagenet64", "val", data_dir=root).shape == (3, 64, 64)


def test_class_list_sources(tmp_path, monkeypatch):
    root = _folder(tmp_path / "in", ["b", "a"], per_class=1)
    with pytest.raises(ValueError, match=r"2 class folder\(s\) \(a, b\), not the 1000 of ImageNet-1k.*classes\.txt"):
        load_imagenet(root, "val")
    # explicit list: just these folders, in the given order
    assert load_imagenet(root, "val", classes=["b", "a"]).labels.tolist() == [0, 1]
    # a file in the data folder, and the environment variable (which wins)
    (root / "imagenet_class_index.json").write_text(json.dumps({"1": ["a", "A"], "0": ["b", "B"], "2": ["c", "C"]}))
    ds = load_imagenet(root, "val")
    assert ds.classes == ["b", "a", "c"] and ds.labels.tolist() == [0, 1]
    env = tmp_path / "wnids.txt"
    env.write_text("# comment\na\n\nb\n")
    monkeypatch.setenv("ADVPURE_IMAGENET_CLASSES", str(env))
    assert load_imagenet(root, "val").labels.tolist() == [0, 1]  # a -> 0, b -> 1 (order of files: by class index)
    monkeypatch.delenv("ADVPURE_IMAGENET_CLASSES")
    with pytest.raises(ValueError, match=r"class folder\(s\) a in .* are not in the class list"):
        load_imagenet(root, "val", classes=["b", "x"])
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="classes listed twice: a"):
        read_class_list(dup)


def test_all_1000_folders_use_sorted_order(tmp_path):
    """With every class present and no list, the index is the sorted folder position (torchvision ImageFolder)."""
    src = tmp_path / "one.JPEG"
    _save(src, 8, 8)
    data = src.read_bytes()
    val = tmp_path / "in" / "val"
    for w in reversed(WNIDS_1K):
        (val / w).mkdir(parents=True)
        (val / w / "x.JPEG").write_bytes(data)
    ds = load_dataset("imagenet", "val", data_dir=tmp_path / "in")
    assert ds.classes == WNIDS_1K and ds.labels.tolist() == list(range(1000))
    assert ds.meta["class_list"].startswith("sorted folders")


def test_modes_are_converted_to_rgb(tmp_path):
    root = tmp_path / "in"
    _save(root / "val" / "a" / "gray.JPEG", 40, 30, mode="L")
    _save(root / "val" / "a" / "cmyk.JPEG", 30, 40, mode="CMYK")
    _save(root / "val" / "b" / "rgb.png", 30, 30, fmt="PNG")
    (root / "val" / "b" / "notes.txt").write_text("ignored")
    ds = load_imagenet(root, "val", classes=["a", "b"], size=16, resize=16)
    x, y = ds.tensors()
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0, 0, 1]
    torch.testing.assert_close(x[1, 0], x[1, 1])  # gray replicated (sorted: cmyk, gray, rgb)


def test_lazy_decoding_and_corrupt_files_named(tmp_path):
    root = _folder(tmp_path / "in", ["a", "b"], per_class=1)
    bad = root / "val" / "b" / "truncated.JPEG"
    good = sorted((root / "val" / "a").iterdir())[0]
    bad.write_bytes(good.read_bytes()[:300])  # header only: PIL opens it, decoding fails
    ds = load_imagenet(root, "val", classes=["a", "b"])  # listing only: nothing decoded yet
    assert len(ds) == 3
    ds.batch([0])  # the good image decodes
    i = ds.files.index(bad)
    with pytest.raises(ValueError, match=r"truncated\.JPEG: not a readable image"):
        ds.batch([i])
    (root / "val" / "b" / "garbage.JPEG").write_bytes(b"not an image at all")
    ds = load_imagenet(root, "val", classes=["a", "b"])
    with pytest.raises(ValueError, match=r"garbage\.JPEG: not a readable image"):
        ds.batch([ds.files.index(root / "val" / "b" / "garbage.JPEG")])


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagenet", "val", data_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no val/ folder"):
        load_dataset("imagenet", "val", data_dir=tmp_path / "empty")
    flat = tmp_path / "flat"
    _save(flat / "val" / "ILSVRC2012_val_00000001.JPEG", 8, 8)
    with pytest.raises(ValueError, match=r"holds images directly .*<wnid>/\*\.JPEG"):
        load_dataset("imagenet", "val", data_dir=flat)
    emptycls = tmp_path / "emptycls"
    _save(emptycls / "val" / "a" / "x.JPEG", 8, 8)
    (emptycls / "val" / "b").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) without images in .*: b"):
        load_imagenet(emptycls, "val", classes=["a", "b"])
    with pytest.raises(ValueError, match="split must be train, val or test"):
        load_imagenet(emptycls, "validation", classes=["a", "b"])
    # data_dir may be the split folder itself
    (emptycls / "val" / "b").rmdir()
    assert len(load_imagenet(emptycls / "val", "val", classes=["a"], size=8, resize=8)) == 1
