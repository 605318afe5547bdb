"""MNIST and Fashion-MNIST from the original gzipped IDX files.

Expected layout (file names as distributed)::

    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

where ``<root>`` comes from :func:`ranvier.data.root.resolve_data_root`. Nothing is downloaded
unless ``download=True`` is passed.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.request
import zlib

import numpy as np
import torch

from .root import DataError, _resolve, verify_sha256

__all__ = ["CHECKSUMS", "DATASETS", "MIRRORS", "SPLITS", "load_images"]

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}

# SHA-256 of the official .gz files (identical to shared/data/SHA256SUMS).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

# Canonical sources, used only with download=True.
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049  # 0x00000803 (ubyte, 3 dims), 0x00000801 (ubyte, 1 dim)


def _download(url: str, dest: pathlib.Path, expected: str) -> None:
    """Fetch ``url`` to a temp file beside ``dest``, check its sha256, then move it into place.

    os.replace is atomic on one filesystem, so a crash or a concurrent loader never sees a
    half-written file under the final name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != expected:
            raise DataError(
                f"download of {url} is corrupt or truncated, expected sha256 {expected} "
                f"got {h.hexdigest()}; nothing was written to {dest}"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are not secret
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, timeouts and disk errors are all OSError
        raise DataError(f"could not download {url} to {dest}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_idx(path: pathlib.Path, magic: int, tail: tuple[int, ...], where: str) -> np.ndarray:
    """Parse a gzipped uint8 IDX file whose shape must be ``(N, *tail)``; returns a writable array."""
    try:
        with open(path, "rb") as f:
            raw = zlib.decompress(f.read(), wbits=31)  # gzip container; one call is fastest
    except (OSError, zlib.error, EOFError) as exc:
        raise DataError(f"{path} is not a valid gzip file ({exc}); {where}") from exc
    ndim = 1 + len(tail)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} bytes); {where}")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise DataError(f"{path}: bad IDX magic {got_magic}, expected {magic}; {where}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != tail:
        raise DataError(f"{path}: IDX shape {dims}, expected (N, {', '.join(map(str, tail))}); {where}")
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(
            f"{path}: IDX payload has {len(raw) - header} bytes, header says {int(np.prod(dims))} "
            f"(truncated?); {where}"
        )
    # .copy(): frombuffer over bytes is read-only, and torch.from_numpy warns on read-only arrays.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_images(
    dataset: str = "mnist",
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST or Fashion-MNIST.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000, the ``t10k`` files).
        data_dir: data root; see :func:`ranvier.data.root.resolve_data_root`.
        download: fetch missing files from the canonical source (:data:`MIRRORS`).
        verify: check each file's sha256 against :data:`CHECKSUMS` (cached per process).

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` (raw 0..255, raster order) and int64 ``[N]``
        with values 0..9.

    Raises:
        ValueError: unknown ``dataset`` or ``split``.
        DataError: a file is missing (and ``download`` is False), corrupt or malformed.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    root, how = _resolve(data_dir)
    where = f"data root {root} ({how})"
    folder = root / dataset

    arrays = []
    for kind, magic, tail in (("images-idx3", _IMAGE_MAGIC, (28, 28)), ("labels-idx1", _LABEL_MAGIC, ())):
        name = f"{_PREFIX[split]}-{kind}-ubyte.gz"
        path = folder / name
        expected = CHECKSUMS[dataset][name]
        if not path.is_file():
            if not download:
                raise DataError(
                    f"missing {path}; {where}. Put {name} under {folder}/ "
                    f"or pass --data-dir / set RANVIER_DATA to a root that has {dataset}/{name}; "
                    "or call with download=True when online"
                )
            _download(MIRRORS[dataset] + name, path, expected)
        if verify:
            verify_sha256(path, expected, root, how)
        arrays.append(_read_idx(path, magic, tail, where))
    images, labels = arrays

    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels for split {split!r}; {where}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{folder}: label {int(labels.max())} out of range 0..9 in split {split!r}; {where}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
