"""Small dataset files in the real on-disk formats, written the way their publishers wrote them.

- IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST): big-endian header + unsigned bytes, gzipped as
  published or raw as torchvision leaves them in ``<Class>/raw`` after extracting.
- CIFAR batches: Python 2 cPickle at protocol 2 with numpy 1.x (``py2_pickle`` emits those
  opcodes byte for byte: str keys as BINSTRING, arrays through numpy.core's ``_reconstruct``),
  besides what Python 3 writes at protocols 2, 4 and 5.
- SVHN: MATLAB ``.mat`` files (``X`` of shape (32, 32, 3, N), ``y`` of shape (N, 1), 10 for 0).
- Image folders: PNG files in ``split/<class>/``.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def patterned(n: int, classes: int, shape: tuple[int, ...], seed: int):
    """Images where class c lights band c (learnable, distinct per class), and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, ..., c % shape[-2], :] = 250
    return images, labels


def write_mnist_family(
    folder: Path,
    n_train: int = 40,
    n_test: int = 20,
    gz: bool = True,
    prefix: str = "",
    classes: int = 10,
    seed: int = 0,
    names: dict | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Four IDX files; returns what each split holds, to compare with what is read back."""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = patterned(n, classes, (28, 28), seed + (split == "test"))
        img_name, lbl_name = (names or IDX_NAMES)[split]
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}{img_name}{ext}", images)
        write_idx(folder / f"{prefix}{lbl_name}{ext}", labels)
        out[split] = images, labels
    return out


# ----------------------------------------------------------------------------- CIFAR


def py2_pickle(obj) -> bytes:
    """``cPickle.dump(obj, f, 2)`` as Python 2.7 with numpy 1.x wrote it (memo opcodes left out)."""

    def emit(x) -> bytes:
        if isinstance(x, str):
            x = x.encode("latin1")
        if isinstance(x, bytes):  # a Python 2 str
            if len(x) < 256:
                return b"U" + bytes([len(x)]) + x
            return b"T" + struct.pack("<i", len(x)) + x
        if isinstance(x, bool):
            return b"\x88" if x else b"\x89"
        if x is None:
            return b"N"
        if isinstance(x, int):
            if 0 <= x < 256:
                return b"K" + bytes([x])
            if 0 <= x < 65536:
                return b"M" + struct.pack("<H", x)
            return b"J" + struct.pack("<i", x)
        if isinstance(x, tuple):  # TUPLE1/2/3 up to three items, as protocol 2 writes them
            body = b"".join(emit(v) for v in x)
            return (
                body + b")\x85\x86\x87"[len(x) : len(x) + 1] if len(x) <= 3 else b"(" + body + b"t"
            )
        if isinstance(x, list):
            return b"](" + b"".join(emit(v) for v in x) + b"e"
        if isinstance(x, dict):
            return b"}(" + b"".join(emit(k) + emit(v) for k, v in x.items()) + b"u"
        if isinstance(x, np.ndarray):
            assert x.dtype == np.uint8
            dtype = (
                b"cnumpy\ndtype\n"
                + emit(("u1", 0, 1))
                + b"R"
                + emit((3, "|", None, None, None, -1, -1, 0))
                + b"b"
            )
            state = b"(" + emit(1) + emit(x.shape) + dtype + emit(False) + emit(x.tobytes()) + b"t"
            return (
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                + emit((0,))
                + emit("b")
                + b"\x87R"
                + state
                + b"b"
            )
        raise TypeError(type(x))

    return b"\x80\x02" + emit(obj) + b"."


def cifar_bytes(entry: dict, style: str) -> bytes:
    """One batch as ``style`` writes it: py2 (the originals), py3-2 (bytes keys), py3-4, py3-5."""
    if style == "py2":
        return py2_pickle(entry)
    if style == "py3-2":
        return pickle.dumps({k.encode(): v for k, v in entry.items()}, protocol=2)
    return pickle.dumps(entry, protocol=int(style[-1]))


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(
    root: Path, hundred: bool, n_per_file: int = 20, seed: int = 0, style: str = "py2"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 (5 train batches + test_batch) or CIFAR-100 (train + test) as torchvision
    lays them out; returns (images, labels) of each file."""
    k = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(["train", "test"] if hundred else CIFAR10_FILES):
        n = n_per_file * (5 if hundred and name == "train" else 1)
        images, labels = patterned(n, k, (3, 32, 32), seed + i)
        entry = {"batch_label": f"batch {name}", "data": images.reshape(n, -1)}
        if hundred:
            entry |= {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}
        else:
            entry["labels"] = labels.tolist()
        entry["filenames"] = [f"img_{j}.png" for j in range(n)]
        (folder / name).write_bytes(cifar_bytes(entry, style))
        out[name] = images, labels
    return out


# ----------------------------------------------------------------------------- SVHN, images


def write_svhn(root: Path, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``<split>_32x32.mat`` as published; returns (N, 3, 32, 32) images and labels 0-9."""
    from scipy.io import savemat

    images, labels = patterned(n, 10, (3, 32, 32), seed)
    root.mkdir(parents=True, exist_ok=True)
    y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]  # SVHN writes 10 for digit 0
    savemat(root / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})
    return images, labels


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_png(path: Path, array: np.ndarray) -> None:
    """(H, W) grey or (H, W, 3) RGB uint8 as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
