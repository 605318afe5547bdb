"""Tests for ranvier.data: data root, MNIST/Fashion-MNIST loading, MNIST-1D, input encodings."""

from __future__ import annotations

import gzip
import os
import pathlib
import random
import shutil
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ranvier.data import (
    DataError,
    load_images,
    load_mnist1d,
    n_channels_threshold_crossing,
    pixel_sequence,
    resolve_data_root,
    threshold_crossing,
    verify_sha256,
)
from ranvier.data import mnist as mnist_mod
from ranvier.data import mnist1d as mnist1d_mod

REPO = pathlib.Path(__file__).resolve().parents[1]

# Label counts published with the data (shared/data/MANIFEST.md).
LABEL_COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion-mnist", "train"): [6000] * 10,
    ("fashion-mnist", "test"): [1000] * 10,
}


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted")


def _must_not_call(*args: object, **kwargs: object) -> None:
    raise AssertionError("unexpected call")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


# --------------------------------------------------------------------------- data root


def test_resolve_data_root_order(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("RANVIER_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("RANVIER_DATA")
    assert resolve_data_root() == pathlib.Path.home() / ".cache" / "ranvier" / "data"
    assert resolve_data_root("~/x") == pathlib.Path.home() / "x"
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root("rel") == tmp_path / "rel"  # absolute, need not exist


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_real(shared_data_root: pathlib.Path, dataset: str, split: str) -> None:
    images, labels = load_images(dataset, split, data_dir=shared_data_root)
    n = 60000 if split == "train" else 10000
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9
    assert torch.bincount(labels, minlength=10).tolist() == LABEL_COUNTS[dataset, split]
    if (dataset, split) == ("mnist", "train"):  # published mean of x/255 (an integer sum is quick)
        assert images.sum(dtype=torch.int64).item() / images.numel() / 255 == pytest.approx(0.1306605, abs=1e-7)


def test_checksums_of_shared_files(shared_data_root: pathlib.Path) -> None:
    sums = {}
    for line in (shared_data_root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    for ds, table in mnist_mod.CHECKSUMS.items():
        for name, digest in table.items():
            assert sums[f"{ds}/{name}"] == digest
            verify_sha256(shared_data_root / ds / name, digest, shared_data_root)


def test_unknown_dataset_or_split() -> None:
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_images("cifar10")
    with pytest.raises(ValueError, match="train, test"):
        load_images("mnist", "validation")


def test_missing_file_message(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as info:
        load_images("mnist", "train", data_dir=tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg
    assert "explicitly" in msg and "download=True" in msg and "RANVIER_DATA" in msg
    # The root's origin is named when it comes from the environment.
    monkeypatch.setenv("RANVIER_DATA", str(tmp_path / "envroot"))
    with pytest.raises(DataError, match="environment variable RANVIER_DATA"):
        load_images("fashion-mnist", "test")


def _copy_test_split(src_root: pathlib.Path, dst_root: pathlib.Path) -> pathlib.Path:
    dst = dst_root / "mnist"
    dst.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(src_root / "mnist" / name, dst / name)
    return dst


def test_corrupt_file(shared_data_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    folder = _copy_test_split(shared_data_root, tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    assert load_images("mnist", "test", data_dir=tmp_path)[1].shape == (10000,)  # good copy loads
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))
    os.utime(labels, ns=(0, 10**9))  # new mtime for sure: the earlier success must not be reused
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_images("mnist", "test", data_dir=tmp_path)
    assert str(labels) in str(info.value) and str(tmp_path) in str(info.value)


def test_truncated_and_bad_header(shared_data_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    folder = _copy_test_split(shared_data_root, tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()

    labels.write_bytes(good[: len(good) // 2])  # truncated gzip stream
    with pytest.raises(DataError, match="corrupt or truncated"):  # caught by the checksum ...
        load_images("mnist", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="not a valid gzip") as info:  # ... and by the parser
        load_images("mnist", "test", data_dir=tmp_path, verify=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)

    labels.write_bytes(gzip.compress((2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\0\1\2"))
    with pytest.raises(DataError, match="bad IDX magic 2051, expected 2049"):
        load_images("mnist", "test", data_dir=tmp_path, verify=False)

    labels.write_bytes(gzip.compress((2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + b"\0" * 99))
    with pytest.raises(DataError, match="header says 10000"):
        load_images("mnist", "test", data_dir=tmp_path, verify=False)

    labels.write_bytes(gzip.compress(b"\0\0"))
    with pytest.raises(DataError, match="header truncated"):
        load_images("mnist", "test", data_dir=tmp_path, verify=False)


def test_download_from_local_mirror(
    shared_data_root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download=True fetches, verifies and atomically places files (a file:// mirror keeps it offline)."""
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", (shared_data_root / "mnist").as_uri() + "/")
    images, labels = load_images("mnist", "test", data_dir=tmp_path / "root", download=True)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    # A mirror serving a bad file: error, and nothing (not even a partial file) left behind.
    bad = _copy_test_split(shared_data_root, tmp_path / "badmirror")
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", bad.as_uri() + "/")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_images("mnist", "test", data_dir=tmp_path / "root2", download=True)
    assert [p.name for p in (tmp_path / "root2" / "mnist").iterdir()] == ["t10k-images-idx3-ubyte.gz"]


# --------------------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("ranvier-cache")


@pytest.fixture
def fresh_mnist1d(
    mnist1d_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> Iterator[pathlib.Path]:
    """Offline, private disk cache, empty in-process cache (so tests do not see each other's results)."""
    monkeypatch.setenv("RANVIER_CACHE", str(mnist1d_cache))
    mnist1d_mod._load_arrays.cache_clear()
    yield mnist1d_cache
    mnist1d_mod._load_arrays.cache_clear()


def test_mnist1d_default(fresh_mnist1d: pathlib.Path) -> None:
    x_train, y_train, x_test, y_test = load_mnist1d()
    assert x_train.shape == (8000, 40) and x_test.shape == (2000, 40)
    assert x_train.dtype == x_test.dtype == torch.float32
    assert y_train.shape == (8000,) and y_test.shape == (2000,)
    assert y_train.dtype == y_test.dtype == torch.int64
    for y in (y_train, y_test):
        assert set(y.tolist()) == set(range(10))
    x = torch.cat([x_train, x_test])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3  # standardised set
    assert len(list(fresh_mnist1d.glob("mnist1d-*n10000-split0.8-seed42.npz"))) == 1


def test_mnist1d_seed(fresh_mnist1d: pathlib.Path) -> None:
    a = load_mnist1d(num_samples=300, seed=1)
    b = load_mnist1d(num_samples=300, seed=2)
    assert a[0].shape == (240, 40) and a[2].shape == (60, 40)
    assert not torch.equal(a[0], b[0])
    # Regenerate from scratch (no in-process or disk cache): identical for the same seed.
    mnist1d_mod._load_arrays.cache_clear()
    for f in fresh_mnist1d.glob("mnist1d-*n300-*seed1.npz"):
        f.unlink()
    again = load_mnist1d(num_samples=300, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, again))


def test_mnist1d_caches(fresh_mnist1d: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_mnist1d(num_samples=200, seed=7)
    first[0].zero_()  # callers get their own copies
    assert load_mnist1d(num_samples=200, seed=7)[0].abs().sum() > 0

    # A new process would start with an empty lru_cache: the disk cache must serve it.
    (path,) = fresh_mnist1d.glob("mnist1d-*n200-*seed7.npz")
    mnist1d_mod._load_arrays.cache_clear()
    real_generate = mnist1d_mod._generate
    monkeypatch.setattr(mnist1d_mod, "_generate", _must_not_call)
    cached = load_mnist1d(num_samples=200, seed=7)

    # A corrupt cache file is regenerated and rewritten.
    path.write_bytes(b"garbage")
    mnist1d_mod._load_arrays.cache_clear()
    monkeypatch.setattr(mnist1d_mod, "_generate", real_generate)
    regenerated = load_mnist1d(num_samples=200, seed=7)
    assert all(torch.equal(u, v) for u, v in zip(cached, regenerated))
    with np.load(path) as z:
        assert np.array_equal(z["x_train"], cached[0].numpy())


def test_mnist1d_keeps_global_rng(fresh_mnist1d: pathlib.Path) -> None:
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_mnist1d(num_samples=100, seed=3)
    assert (np.random.rand(), random.random()) == expected


# --------------------------------------------------------------------------- encodings


def test_pixel_sequence() -> None:
    img = torch.arange(784, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(1, 28, 28)
    img = torch.cat([img, 255 - img])
    seq = pixel_sequence(img)
    assert seq.shape == (2, 784, 1) and seq.dtype == torch.float32
    assert seq[0, 29, 0].item() == pytest.approx(29 / 255)  # row 1, column 1 -> step 29
    assert seq[0, 300, 0].item() == pytest.approx((300 % 256) / 255)
    assert seq[1, 0, 0].item() == 1.0 and seq[0, 255, 0].item() == 1.0 and seq[0, 0, 0].item() == 0.0


# Channel layout for 40 thresholds k/39: onset(k) = 2k, offset(k) = 2k + 1 for k < 39,
# touch (pixel == 255) = 78, output cue = 79.
def ON(k: int) -> int:
    return 2 * k


def OFF(k: int) -> int:
    return 2 * k + 1


TOUCH, CUE = 78, 79


def _handcrafted() -> torch.Tensor:
    """Raster positions: 0 -> 255, 99..103 -> 0, 40, 255, 85, 0, and 782, 783 -> 0, 255.

    Pixel p reaches threshold k/39 iff 39 p >= 255 k:  p = 40 reaches k <= 6 (39*40/255 = 6.1),
    p = 85 reaches k <= 13 exactly (85/255 = 13/39 = 1/3, a tie that counts as reached),
    p = 255 reaches every k.
    """
    img = torch.zeros(1, 784, dtype=torch.uint8)
    img[0, 0] = 255
    img[0, 100:103] = torch.tensor([40, 255, 85], dtype=torch.uint8)
    img[0, 783] = 255
    return img.reshape(1, 28, 28)


def _expected_spikes(ext_time: int) -> set[tuple[int, int]]:
    """(time, channel) pairs derived by hand from the reference rules (see _handcrafted)."""
    e = ext_time
    spikes: set[tuple[int, int]] = set()

    def at(pixel: int) -> int:  # the last step of a pixel: crossings are placed there
        return pixel * e + e - 1

    # pixel 0 = 255 -> pixel 1 = 0: offsets of k = 1..38 (k = 0 can never be crossed);
    # no onset at t = 0 since nothing precedes the first pixel.
    spikes |= {(at(0), OFF(k)) for k in range(1, 39)}
    spikes |= {(at(99), ON(k)) for k in range(1, 7)}  # 0 -> 40
    spikes |= {(at(100), ON(k)) for k in range(7, 39)}  # 40 -> 255
    spikes |= {(at(101), OFF(k)) for k in range(14, 39)}  # 255 -> 85
    spikes |= {(at(102), OFF(k)) for k in range(1, 14)}  # 85 -> 0
    spikes |= {(at(782), ON(k)) for k in range(1, 39)}  # 0 -> 255; no offset after the last pixel
    # touch: every step of every 255 pixel
    spikes |= {(p * e + j, TOUCH) for p in (0, 101, 783) for j in range(e)}
    spikes |= {(t, CUE) for t in range(784 * e, 840 * e)}
    return spikes


@pytest.mark.parametrize("ext_time", [1, 2])
def test_threshold_crossing_handcrafted(ext_time: int) -> None:
    out = threshold_crossing(_handcrafted(), ext_time=ext_time)
    assert out.shape == (1, 840 * ext_time, 80) and out.dtype == torch.float32
    assert n_channels_threshold_crossing(40) == 80
    assert set(out.unique().tolist()) == {0.0, 1.0}
    fired = {(t, c) for t, c in out[0].nonzero().tolist()}
    assert fired == _expected_spikes(ext_time)
    # cue: on exactly during the appended period, and nothing else fires there
    assert out[0, :, CUE].nonzero().flatten().tolist() == list(range(784 * ext_time, 840 * ext_time))
    assert out[0, 784 * ext_time :, :CUE].sum() == 0


def _reference_loop(img: np.ndarray, n_thresholds: int, ext_time: int, cue_steps: int) -> np.ndarray:
    """Literal per-threshold loop over the reference rules, for one flat uint8 image."""
    y = np.repeat(img.astype(np.float32) * (1.0 / 255.0), ext_time)
    rows = []
    for thr in np.linspace(0, 1, n_thresholds):
        if thr == 1:
            rows.append((y == 1).astype(np.float32))
            continue
        lower, higher = y < thr, y >= thr
        on, off = np.zeros_like(y), np.zeros_like(y)
        on[np.nonzero(lower[:-1] & higher[1:])[0]] = 1
        off[np.nonzero(higher[:-1] & lower[1:])[0]] = 1
        rows += [on, off]
    spikes = np.stack(rows, axis=1)
    spikes = np.pad(spikes, ((0, cue_steps * ext_time), (0, 1)))
    spikes[-cue_steps * ext_time :, -1] = 1
    return spikes


@pytest.mark.parametrize(("n_thresholds", "ext_time", "cue_steps"), [(40, 1, 56), (40, 2, 56), (7, 3, 5)])
def test_threshold_crossing_matches_loop(n_thresholds: int, ext_time: int, cue_steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    # Mostly-dark images with bright strokes and the exact-tie values 85/170/255 present.
    imgs = torch.randint(0, 256, (3, 28, 28), generator=gen, dtype=torch.uint8)
    imgs[torch.rand(3, 28, 28, generator=gen) < 0.5] = 0
    imgs[0, 3, :6] = torch.tensor([85, 170, 255, 170, 85, 0], dtype=torch.uint8)
    out = threshold_crossing(imgs, n_thresholds=n_thresholds, ext_time=ext_time, cue_steps=cue_steps)
    assert out.shape == (3, (784 + cue_steps) * ext_time, n_channels_threshold_crossing(n_thresholds))
    for b in range(3):
        ref = _reference_loop(imgs[b].flatten().numpy(), n_thresholds, ext_time, cue_steps)
        assert np.array_equal(out[b].numpy(), ref)


def test_encoding_input_checks() -> None:
    with pytest.raises(TypeError, match="uint8"):
        threshold_crossing(torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="n_thresholds"):
        threshold_crossing(torch.zeros(1, 28, 28, dtype=torch.uint8), n_thresholds=1)
