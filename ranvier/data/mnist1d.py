"""MNIST-1D (Greydanus & Steinbach), generated offline with the ``mnist1d`` package.

The official pickle is never downloaded: ``mnist1d.data.make_dataset`` builds the same data
(within ~1e-15) from templates shipped in the package. Generating 10 000 samples takes ~3 s, so
results are cached twice: in-process (``functools.lru_cache``) and on disk as a small ``.npz`` under
``$RANVIER_CACHE`` (default ``~/.cache/ranvier``), so a second process loads it in milliseconds.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import random
import time
import zipfile
from importlib import metadata

import numpy as np
import torch

from .cache import CACHE_ENV_VAR, cache_dir, write_npz_atomic

__all__ = ["CACHE_ENV_VAR", "cache_dir", "load_mnist1d"]

_log = logging.getLogger(__name__)
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _cache_path(num_samples: int, train_split: float, seed: int) -> pathlib.Path:
    # The package version is part of the key: a new generator may produce different data.
    version = metadata.version("mnist1d")
    return cache_dir() / f"mnist1d-v{version}-n{num_samples}-split{train_split!r}-seed{seed}.npz"


def _generate(num_samples: int, train_split: float, seed: int) -> dict[str, np.ndarray]:
    """Run the mnist1d generator; leaves the global ``random``/``numpy`` RNG states untouched."""
    # mnist1d imports matplotlib.pyplot at import time; never let that pick a GUI backend.
    os.environ.setdefault("MPLBACKEND", "Agg")
    import mnist1d.data  # lazy: ~1 s import (scipy, matplotlib, requests)

    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    # make_dataset reseeds the global RNGs (mnist1d.utils.set_seed); restore them afterwards so
    # loading data does not silently change the caller's random stream.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        t0 = time.perf_counter()
        d = mnist1d.data.make_dataset(args)  # never get_dataset(): that one downloads
        _log.info("generated MNIST-1D n=%d seed=%d in %.2f s", num_samples, seed, time.perf_counter() - t0)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": d["x"].astype(np.float32),
        "y_train": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }


def _read_cache(path: pathlib.Path, n_train: int, n_test: int) -> dict[str, np.ndarray] | None:
    """Load a cache file; ``None`` if absent or unreadable/inconsistent (then it is regenerated)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _KEYS}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        _log.warning("ignoring corrupt MNIST-1D cache %s (%s); regenerating", path, exc)
        return None
    expected = {
        "x_train": ((n_train, 40), np.float32),
        "y_train": ((n_train,), np.int64),
        "x_test": ((n_test, 40), np.float32),
        "y_test": ((n_test,), np.int64),
    }
    if any(arrays[k].shape != s or arrays[k].dtype != t for k, (s, t) in expected.items()):
        _log.warning("ignoring MNIST-1D cache %s with unexpected shapes; regenerating", path)
        return None
    return arrays


def _write_cache(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    write_npz_atomic(path, arrays, "MNIST-1D")


@functools.lru_cache(maxsize=8)
def _load_arrays(num_samples: int, train_split: float, seed: int) -> tuple[np.ndarray, ...]:
    n_total = 10 * (num_samples // 10)  # make_dataset draws num_samples // 10 per class
    n_train = int(n_total * train_split)
    path = _cache_path(num_samples, train_split, seed)
    arrays = _read_cache(path, n_train, n_total - n_train)
    if arrays is None:
        arrays = _generate(num_samples, train_split, seed)
        _write_cache(path, arrays)
    for a in arrays.values():
        a.flags.writeable = False  # shared by every caller through the lru_cache
    return tuple(arrays[k] for k in _KEYS)


def load_mnist1d(
    num_samples: int = 10000, train_split: float = 0.8, seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D with the package's default transform parameters.

    Args:
        num_samples: total samples; ``num_samples // 10`` are drawn per class.
        train_split: fraction (of the shuffled samples) used for training.
        seed: generator seed (the official pickle uses 42).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 ``[N_train, 40]``, int64 ``[N_train]``,
        float32 ``[N_test, 40]``, int64 ``[N_test]``; labels 0..9; ``x`` is standardised over the
        whole set (mean 0, std 1). Defaults give 8000 train / 2000 test. Fresh tensors are returned
        on each call, so callers may modify them.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10 (one per class), got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    arrays = _load_arrays(int(num_samples), float(train_split), int(seed))
    # a.copy() + from_numpy: ~100x faster than torch.tensor(a) on these read-only arrays.
    return tuple(torch.from_numpy(a.copy()) for a in arrays)  # type: ignore[return-value]
