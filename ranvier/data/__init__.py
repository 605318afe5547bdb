"""Datasets (MNIST, Fashion-MNIST, MNIST-1D) and input encodings."""

from .encoding import latency_code as latency_code
from .encoding import level_crossing as level_crossing
from .encoding import n_channels_threshold_crossing as n_channels_threshold_crossing
from .encoding import pixel_sequence as pixel_sequence
from .encoding import threshold_crossing as threshold_crossing
from .mnist import load_images as load_images
from .mnist1d import load_mnist1d as load_mnist1d
from .root import DataError as DataError
from .text import Corpus as Corpus
from .text import batchify as batchify
from .text import lm_batches as lm_batches
from .text import load_corpus as load_corpus
from .root import resolve_data_root as resolve_data_root
from .root import verify_sha256 as verify_sha256

__all__ = [
    "Corpus",
    "DataError",
    "batchify",
    "latency_code",
    "lm_batches",
    "load_corpus",
    "level_crossing",
    "load_images",
    "load_mnist1d",
    "n_channels_threshold_crossing",
    "pixel_sequence",
    "resolve_data_root",
    "threshold_crossing",
    "verify_sha256",
]
