"""Shared fixtures. Tests run on CPU; ../shared-dependent tests skip with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advpure.threads import apply as _apply_threads

# the project's thread default (1 on machines with <= 2 CPUs unless OMP_NUM_THREADS says otherwise): torch's own
# default oversubscribes a shared 2-core machine (a fresh-clone run took 878 s of tests beside a 1-thread job)
_apply_threads()

REPO = Path(__file__).resolve().parents[1]
ZOO_DIGITS = REPO / "zoo" / "digits-small-cnn.safetensors"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep test runs out of the user's cache, but share the decoded CIFAR-10 across the session."""
    import os

    old = os.environ.get("ADVPURE_CACHE")
    if old is None:
        os.environ["ADVPURE_CACHE"] = str(tmp_path_factory.mktemp("advpure-cache"))
    yield
    if old is None:
        os.environ.pop("ADVPURE_CACHE", None)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    from advpure.paths import shared_dir as _shared

    p = _shared()
    if p is None:
        pytest.skip("../shared not found (set ADVPURE_SHARED): third-party weights and CIFAR-10 JPEG unavailable")
    return p


@pytest.fixture(scope="session")
def cifar10_jpeg(shared_dir) -> Path:
    p = shared_dir / "data" / "cifar10-jpeg.tar.gz"
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p


@pytest.fixture(scope="session")
def digits_data():
    from advpure.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _train_small_cnn(train, epochs: int = 30, seed: int = 0):
    from advpure.models import build_classifier

    torch.manual_seed(seed)
    model = build_classifier("small-cnn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train.tensors()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_classifier(digits_data):
    """The committed zoo digits CNN when present, otherwise one trained here (a few seconds)."""
    if ZOO_DIGITS.is_file():
        from advpure.models import load_classifier

        return load_classifier(ZOO_DIGITS)
    return _train_small_cnn(digits_data[0])
