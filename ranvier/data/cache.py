"""On-disk caches of derived data (generated MNIST-1D, tokenised corpora)."""
from __future__ import annotations

import logging
import os
import pathlib
import tempfile

import numpy as np

__all__ = ["CACHE_ENV_VAR", "cache_dir", "write_npz_atomic"]

CACHE_ENV_VAR = "RANVIER_CACHE"
_log = logging.getLogger(__name__)


def cache_dir() -> pathlib.Path:
    """Directory for derived-data caches: ``$RANVIER_CACHE`` or ``~/.cache/ranvier``."""
    return pathlib.Path(os.environ.get(CACHE_ENV_VAR) or "~/.cache/ranvier").expanduser().absolute()


def write_npz_atomic(path: pathlib.Path, arrays: dict[str, np.ndarray], what: str) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + os.replace), so a concurrent reader
    never sees half a file. A cache is an optimisation: failure to write only logs a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:  # a file object stops np.savez from appending ".npz"
                np.savez(f, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is not secret
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:  # read-only home etc.
        _log.warning("could not write %s cache %s: %s", what, path, exc)
