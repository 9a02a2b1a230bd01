import math

import pytest
import torch

from advpure.contracts import check_images, check_int, check_labels, check_logits, check_positive


def test_good_images_pass():
    x = torch.rand(2, 3, 4, 4)
    assert check_images(x, channels=3, size=4) is x


@pytest.mark.parametrize(
    "x, kw, match",
    [
        (torch.rand(2, 3, 4, 4) * 2, {}, r"values in \[.*\], expected \[0, 1\]"),
        (torch.rand(2, 3, 4, 4) - 0.5, {}, r"expected \[0, 1\]"),
        (torch.rand(2, 3, 4, 4), {"channels": 1}, "expected 1 channel"),
        (torch.rand(2, 3, 4, 4), {"size": 8}, "expected image size 8x8, got 4x4"),
        (torch.full((1, 1, 2, 2), float("nan")), {}, "NaN/Inf"),
        (torch.full((1, 1, 2, 2), float("inf")), {}, "NaN/Inf"),
        (torch.rand(0, 3, 4, 4), {}, "empty batch"),
        (torch.rand(3, 4, 4), {}, "4-D NCHW"),
    ],
)
def test_bad_images(x, kw, match):
    with pytest.raises(ValueError, match=match):
        check_images(x, **kw)


def test_bad_image_dtype():
    with pytest.raises(TypeError, match="float"):
        check_images(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


def test_labels_logits_numbers():
    check_labels(torch.tensor([0, 1]), 2, num_classes=2)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        check_labels(torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="class indices"):
        check_labels(torch.tensor([0, 5]), 2, num_classes=3)
    with pytest.raises(ValueError, match=r"\(4, classes"):
        check_logits(torch.zeros(4), 4)
    with pytest.raises(TypeError, match="logits"):
        check_logits((torch.zeros(4, 2),), 4)
    for bad in (-1.0, math.inf, math.nan, 0.0):
        with pytest.raises(ValueError, match="eps"):
            check_positive(bad, "eps")
    assert check_positive(0.0, "eps", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="steps"):
        check_int(0, "steps")
