"""DAD experiments: where the clean reference set comes from."""

import pytest
import torch

from advpure.experiments.dad_attacks import split_reference


def _rows(x):
    return {tuple(r.flatten().tolist()) for r in x}


def test_test_split_reference_is_excluded_from_evaluation():
    ref, pool = split_reference("digits", reference_split="test", n_reference=50, seed=0)
    from advpure.data import load_dataset

    test = load_dataset("digits", "test")
    assert ref.shape == (50, 1, 8, 8) and len(pool) == len(test) - 50
    xp, _ = pool.tensors()
    assert not _rows(ref) & _rows(xp)  # no reference image is evaluated
    ev, _ = pool.subset(40, 1).tensors()
    assert ev.shape[0] == 40 and not _rows(ref) & _rows(ev)
    ref2, _ = split_reference("digits", reference_split="test", n_reference=50, seed=0)
    assert torch.equal(ref, ref2)


def test_train_reference_and_bad_split():
    ref, pool = split_reference("digits", reference_split="train", n_reference=30, seed=0)
    assert ref.shape[0] == 30 and pool.split == "test"
    with pytest.raises(ValueError, match="reference_split"):
        split_reference("digits", reference_split="val")
    with pytest.raises(ValueError, match="n_reference"):
        split_reference("digits", reference_split="test", n_reference=10_000)


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_dad_attacks_runs_in_both_modes(mode, tmp_path):
    from advpure.experiments.dad_attacks import dad_attacks

    r = dad_attacks(dataset="digits", classifier="zoo/digits-small-cnn.safetensors",
                    kernel="zoo/digits-dad-kernel.safetensors", denoiser="zoo/digits-dad-denoiser.safetensors",
                    n=20, batch_size=10, seeds=(0,), steps=2, eot=1, reference_split="test", mode=mode,
                    n_calib=100, out=tmp_path)
    assert r["mode"] == mode and (tmp_path / "dad-attacks.json").is_file()
    for a, d in r["results"].items():
        assert 0 <= d["accuracy"]["mean"] <= 1 and 0 <= d["detected_batches"]["mean"] <= 1, a
    # clean inputs: DAD hands them to the classifier unless flagged, so accuracy stays near the undefended one
    assert r["results"]["none"]["accuracy"]["mean"] >= r["results"]["none"]["undefended_accuracy"]["mean"] - 0.15
    with pytest.raises(ValueError, match="mode"):
        dad_attacks(dataset="digits", classifier="zoo/digits-small-cnn.safetensors",
                    kernel="zoo/digits-dad-kernel.safetensors", denoiser="zoo/digits-dad-denoiser.safetensors",
                    n=10, mode="both")


def test_mixed_batch_table_on_digits():
    from advpure.attacks.pgd import make_adversarial
    from advpure.experiments.dad_attacks import build_dad, mixed_batch_table
    from advpure.models import load_classifier

    clf = load_classifier("zoo/digits-small-cnn.safetensors")
    ref, pool = split_reference("digits", reference_split="test", n_reference=250, seed=0)
    kw = dict(dataset="digits", classifier=clf, kernel="zoo/digits-dad-kernel.safetensors",
              denoiser="zoo/digits-dad-denoiser.safetensors")
    dad_b = build_dad(reference=ref[:150], **kw)
    dad_s = build_dad(reference=ref[:150], mode="sample", calibration=ref[150:], **kw)
    x, y = pool.subset(40, 0).tensors()
    xa = make_adversarial(clf, x, y, eps=0.2, steps=5, seed=0)
    t = mixed_batch_table(clf, dad_b, dad_s, x, y, xa, torch.arange(40), fractions=(0.0, 0.5, 1.0), n_batches=2,
                          batch_size=20, generator=torch.Generator().manual_seed(0))
    assert t[0.0]["flag_sample_adv"] is None and t[1.0]["flag_sample_clean"] is None
    assert t[0.5]["flag_sample_adv"] is not None and t[0.5]["flag_sample_clean"] is not None
    for row in t.values():
        assert all(v is None or 0 <= v <= 1 for v in row.values())
    # all-PGD batches are flagged at least as often as clean ones, and some are (batches of 20: power below 1)
    assert t[1.0]["flag_batch"] > 0 and t[1.0]["flag_batch"] >= t[0.0]["flag_batch"]
