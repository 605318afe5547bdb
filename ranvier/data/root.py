"""Where data files live, and the error raised when one is missing or corrupt.

The data root is chosen in this order:

1. an explicit ``data_dir`` argument (the CLI passes ``--data-dir`` here),
2. the environment variable ``RANVIER_DATA``,
3. ``~/.cache/ranvier/data``.

Each dataset lives in a sub-folder of the root, e.g. ``<root>/mnist/train-images-idx3-ubyte.gz``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_DATA_ROOT",
    "DataError",
    "data_root_source",
    "resolve_data_root",
    "verify_sha256",
]

DATA_ENV_VAR = "RANVIER_DATA"
DEFAULT_DATA_ROOT = "~/.cache/ranvier/data"

# Checksums that already passed in this process, keyed by (path, mtime_ns, size, expected):
# hashing the 26 MB Fashion-MNIST archive on every load would dominate load time.
_VERIFIED: set[tuple[str, int, int, str]] = set()


class DataError(RuntimeError):
    """A data file is missing, corrupt, truncated or has an unexpected format.

    The message always names the file, the data root and how that root was chosen, so that the
    fix (put the file there, point ``--data-dir``/``RANVIER_DATA`` elsewhere, or download) is
    obvious without reading the code.
    """


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[pathlib.Path, str]:
    """Return ``(absolute root, human-readable description of how it was chosen)``."""
    if data_dir is not None:
        raw, how = os.fspath(data_dir), "given explicitly (data_dir argument / --data-dir)"
    elif os.environ.get(DATA_ENV_VAR):
        raw, how = os.environ[DATA_ENV_VAR], f"from the environment variable {DATA_ENV_VAR}"
    else:
        raw, how = DEFAULT_DATA_ROOT, f"the default (no data_dir given and {DATA_ENV_VAR} unset)"
    # absolute() rather than resolve(): the root need not exist yet, and symlinks are the user's business.
    return pathlib.Path(raw).expanduser().absolute(), how


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Absolute data root: ``data_dir``, else ``$RANVIER_DATA``, else ``~/.cache/ranvier/data``.

    ``~`` is expanded; the directory is not required to exist.
    """
    return _resolve(data_dir)[0]


def data_root_source(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Describe how :func:`resolve_data_root` would choose the root (for error messages)."""
    return _resolve(data_dir)[1]


def verify_sha256(
    path: str | os.PathLike[str],
    expected: str,
    root: str | os.PathLike[str],
    root_source: str | None = None,
) -> None:
    """Check that the file at ``path`` has the SHA-256 hex digest ``expected``.

    The file is read in 1 MiB chunks. A successful check is remembered for this process as long
    as the file's path, mtime and size are unchanged, so repeated loads do not re-hash.

    Raises:
        DataError: the file is missing or its digest differs ("corrupt or truncated"); the
            message names the file, ``root`` and (if given) ``root_source``.
    """
    p = pathlib.Path(path).absolute()
    expected = expected.lower()
    where = f"data root {root}" + (f" ({root_source})" if root_source else "")
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"cannot read {p} ({exc.strerror}); {where}") from exc
    key = (str(p), st.st_mtime_ns, st.st_size, expected)
    if key in _VERIFIED:
        return
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    got = h.hexdigest()
    if got != expected:
        raise DataError(
            f"{p} is corrupt or truncated, expected sha256 {expected} got {got} "
            f"({st.st_size} bytes); {where}. Delete it and put a good copy there "
            "(or load with download=True when online)."
        )
    _VERIFIED.add(key)
