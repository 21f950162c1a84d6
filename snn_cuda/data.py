"""Data sets for the training command, with no download needed by default.

- ``digits``: the 8x8 handwritten digits that scikit-learn ships inside its package (1,797 images).
- ``mnist``: the four standard IDX files, read with numpy from a folder (raw or .gz); downloaded
  there if missing and the network allows, otherwise a message says which files to put where.

Both are scaled like the seed's MNIST (``ToTensor`` then ``Normalize((0.5,), (1.0,))``): pixels to
[0, 1], minus 0.5. Images come as float32 ``[N, 1, H, W]``, labels as int64 ``[N]``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

DATASETS = ("digits", "mnist")

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# md5 of each file's content after gunzip: the published checksums of the standard MNIST files.
# A mirror may recompress the .gz, so the content is what is checked.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# IDX type codes (the third magic byte) and their numpy dtypes (big-endian where it matters).
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(Exception):
    """A data problem the user can fix (missing or corrupt files, unknown data set)."""


@dataclass
class Split:
    images: torch.Tensor  # [N, 1, H, W] float32, pixels in [0, 1] minus 0.5
    labels: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, limit: Optional[int]) -> "Split":
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (raw, or gzip if the name ends in .gz) into a numpy array.

    Format: 2 zero bytes, a type code, the number of dims d, then d big-endian uint32 sizes, then
    the data. Anything else raises DataError naming the file and the problem.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read IDX file {path}: {type(error).__name__}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: its header starts with {raw[:4].hex() or 'nothing'}, "
            "expected 00 00 <type> <ndim>"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the header says shape {shape} of {dtype} ({expected} bytes) but "
            f"{len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (gzip if the name ends in .gz). For tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _mnist_names(name: str):
    """The standard name and the common variant with a dot (``train-images.idx3-ubyte``, as
    several distributions ship them), each raw or gzipped."""
    dotted = name.replace("-idx", ".idx", 1)
    for base in (name, dotted):
        yield base
        yield base + ".gz"


def _find_mnist_file(data_dir: str, name: str) -> Optional[str]:
    for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw")):  # also torchvision's layout
        for candidate in _mnist_names(name):
            path = os.path.join(folder, candidate)
            if os.path.exists(path):
                return path
    return None


def _content_md5(path: str) -> Optional[str]:
    """md5 of a .gz file's uncompressed content, or None if it is not a readable gzip file."""
    digest = hashlib.md5()
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _download_mnist(data_dir: str, missing) -> None:
    """Fetches each missing file from the first mirror that serves it and keeps it only if its
    content has the published checksum (MNIST_MD5); a file that does not match is deleted, and the
    next mirror is tried."""
    os.makedirs(data_dir, exist_ok=True)
    for name in missing:
        target = os.path.join(data_dir, name + ".gz")
        errors = []
        for mirror in MNIST_MIRRORS:
            tmp = target + ".part"
            try:
                with urllib.request.urlopen(mirror + name + ".gz", timeout=20) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                got = _content_md5(tmp)
                if got != MNIST_MD5[name]:
                    os.remove(tmp)
                    errors.append(
                        f"{mirror}: the downloaded {name}.gz does not have the published content "
                        f"(md5 {got or 'unreadable'}, expected {MNIST_MD5[name]}); deleted it"
                    )
                    continue
                os.replace(tmp, target)
                break
            except OSError as error:
                errors.append(f"{mirror}: {error}")
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise DataError(
                f"MNIST files missing from {os.path.abspath(data_dir)} and the download failed "
                f"({'; '.join(errors)}). Put these four files there (raw or .gz): "
                + ", ".join(MNIST_FILES.values())
            )


def _to_split(images: np.ndarray, labels: np.ndarray, scale: float, what: str,
              n_classes: Optional[int] = None) -> Split:
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{what}: expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}"
        )
    if labels.shape[0] == 0:
        raise DataError(f"{what}: the data set is empty (its files hold no examples)")
    if n_classes is not None and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{what}: labels must be in [0, {n_classes}), found values from {labels.min()} to "
            f"{labels.max()}"
        )
    x = torch.from_numpy(images.astype(np.float32) / scale - 0.5).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return Split(x, y)


def load_mnist(data_dir: str, download: bool = True) -> Tuple[Split, Split]:
    paths = {key: _find_mnist_file(data_dir, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[key] for key, path in paths.items() if path is None]
    if missing:
        if not download:
            raise DataError(
                f"MNIST files missing from {os.path.abspath(data_dir)}: {', '.join(missing)} "
                "(raw or .gz)"
            )
        _download_mnist(data_dir, missing)
        paths = {key: _find_mnist_file(data_dir, name) for key, name in MNIST_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    train = _to_split(arrays["train_images"], arrays["train_labels"], 255.0, "MNIST train", 10)
    test = _to_split(arrays["test_images"], arrays["test_labels"], 255.0, "MNIST test", 10)
    return train, test


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Tuple[Split, Split]:
    """scikit-learn's 8x8 digits (pixel values 0..16), split train/test with a fixed seed."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)  # [1797, 8, 8], 0..16
    labels = bunch.target
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).numpy()
    n_test = int(round(len(labels) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    train = _to_split(images[train_idx], labels[train_idx], 16.0, "digits")
    test = _to_split(images[test_idx], labels[test_idx], 16.0, "digits")
    return train, test


def load_dataset(name: str, data_dir: str = "data", download: bool = True) -> Tuple[Split, Split]:
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist(data_dir, download=download)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
