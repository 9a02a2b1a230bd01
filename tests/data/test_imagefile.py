"""Image sets saved as safetensors (advpure.data.imagefile): uint8 as round(255 x), sha256 verified, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from advpure.data.imagefile import load_image_file, save_image_file, to_uint8


def test_round_trip_stores_round_255x(tmp_path):
    x = torch.tensor([0.0, 0.2, 0.5 / 255, 1.6 / 255, 1.0]).view(1, 1, 1, 5).repeat(2, 3, 1, 1)
    f = tmp_path / "s.safetensors"
    meta = save_image_file(f, x, torch.tensor([3, 1]), torch.tensor([10, 4]), {"purifier": "p", "num_classes": 5})
    assert meta["kind"] == "image-set" and meta["n"] == 2
    s = load_image_file(f)
    # 255 * [0, 0.2, 0.5/255, 1.6/255, 1] = [0, 51, 0.5, 1.6, 255]; round half to even: 0.5 -> 0
    assert s.images[0, 0, 0].tolist() == [0, 51, 0, 2, 255]
    assert s.labels.tolist() == [3, 1] and s.meta["indices"] == [10, 4] and s.num_classes == 5
    assert s.meta["sidecar"]["purifier"] == "p"


def test_bad_image_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        to_uint8(torch.full((1, 1, 2, 2), 1.5))
    with pytest.raises(ValueError, match="one label and one index"):
        save_image_file(tmp_path / "a.safetensors", torch.zeros(2, 1, 2, 2), torch.zeros(3), torch.zeros(2), {})
    f = tmp_path / "s.safetensors"
    save_image_file(f, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]), {"num_classes": 2})
    with pytest.raises(ValueError, match=r"labels outside \[0, 1\)"):
        load_image_file(f, classes=["only"])
    side = f.with_suffix(".json")
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="sha256"):
        load_image_file(f)
    side.write_text(json.dumps({**meta, "kind": "classifier"}))
    with pytest.raises(ValueError, match="not an image set"):
        load_image_file(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_file(tmp_path / "none.safetensors")


def test_sources_are_the_recorded_images_of_the_recorded_set(tmp_path):
    from advpure.data import load_dataset
    from advpure.data.imagefile import load_sources

    train = load_dataset("digits", "train")
    idx = torch.tensor([5, 2, 40])
    x, y = train.batch(idx)
    f = tmp_path / "s.safetensors"
    src = {"dataset": "digits", "split": "train"}
    save_image_file(f, 1 - x, y, idx, {"source": src, "num_classes": 10})
    s = load_sources(load_image_file(f))
    assert torch.equal(s.images, train.images[idx]) and s.labels.tolist() == y.tolist()
    save_image_file(f, 1 - x, (y + 1) % 10, idx, {"source": src, "num_classes": 10})
    with pytest.raises(ValueError, match="labels differ"):
        load_sources(load_image_file(f))
