"""Dataset files, byte by byte: IDX (the MNIST family), CIFAR's python pickles, images via PIL,
and the md5 check of a published file.

Every reader returns numpy arrays and turns any damage into one ``DataError`` line that names the
file. None of them knows where a dataset lives; that is ``sources.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reglab.core.errors import DataError


def _damaged(path: Path, why: object) -> DataError:
    return DataError(
        f"corrupt or truncated data file {path} ({why}): delete it and copy or download it again"
    )


# ----------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:  # BadGzipFile is an OSError
        raise _damaged(path, e) from e


# ----------------------------------------------------------------------------- CIFAR pickles

# Everything a CIFAR batch references: numpy's array reconstruction, nothing else. The original
# files were written by Python 2's cPickle (protocol 2) with numpy 1.x, so they name numpy.core;
# numpy 2 writes numpy._core, and at protocol 5 rebuilds arrays with _frombuffer. A batch made by
# Python 3 at protocol 2 encodes its bytes through _codecs.encode, which _latin1_bytes stands in for.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _Refused(pickle.UnpicklingError):
    pass


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays, and nothing else.

    ``pickle.load`` calls whatever function a file names (``os.system``, ``builtins.open``, ...);
    here every name outside ``_CIFAR_GLOBALS`` is refused before it is looked up, so a tampered
    file cannot run code or touch the disk.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise _Refused(f"{module}.{name}")


def read_cifar_batch(path: Path) -> dict[str, object]:
    """One CIFAR batch file as a dict with ``str`` keys (``data``, ``labels``/``fine_labels``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as e:
        raise DataError(
            f"{path} is not a CIFAR batch: it calls {e}, which no CIFAR file holds, and was not "
            "loaded; delete it and download it again"
        ) from e
    except Exception as e:  # noqa: BLE001 - any other unpickling failure means a damaged file
        raise _damaged(path, type(e).__name__) from e
    if not isinstance(batch, dict):
        raise _damaged(path, f"holds a {type(batch).__name__}, not a dict")
    # Python 3 writers leave bytes keys; the originals read as str under latin1.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 3, 32, 32)`` uint8 images and int64 labels of one CIFAR batch file."""
    batch = read_cifar_batch(path)
    try:
        data, labels = batch["data"], np.asarray(batch[label_key], dtype=np.int64)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise ValueError("data is not a uint8 array")
        images = data.reshape(-1, 3, 32, 32)
        if len(images) != len(labels) or labels.ndim != 1:
            raise ValueError(f"{len(images)} images but {labels.size} labels")
    except (KeyError, ValueError, TypeError) as e:
        raise _damaged(path, e) from e
    return images, labels


# ----------------------------------------------------------------------------- images (PIL)

_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")


def stack_images(images: Iterable, size: tuple[int, int] | None, what: str) -> np.ndarray:
    """``(N, C, H, W)`` uint8 from PIL images: C=1 when every image is grey, else C=3 (RGB).

    With ``size`` (height, width) each image is resized (bilinear); without it every image must
    already have one size. ``what`` names the images in the error (a folder, a class).
    """
    arrays, first = [], None
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise DataError(f"{what} item {i} is a {type(image).__name__}, not an image")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        elif size is None and first is not None and image.size != first[1]:
            raise DataError(
                f"{what}: images differ in size ({first[0]} is {first[1][0]}x{first[1][1]}, "
                f"{getattr(image, 'filename', '') or f'item {i}'} is "
                f"{image.size[0]}x{image.size[1]}): set data.image_size=N (or [H, W]) to resize all"
            )
        if first is None:
            first = (getattr(image, "filename", "") or "item 0", image.size)
        grey = image.mode in _GREY_MODES
        arrays.append(np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8))
    if not arrays:
        raise DataError(f"{what} holds no images")
    if any(a.ndim == 3 for a in arrays):  # some colour: every image becomes RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        return np.stack(arrays).transpose(0, 3, 1, 2).copy()
    return np.stack(arrays)[:, None]


def read_image(path: Path):
    """A PIL image read whole, its file closed (a folder of thousands keeps no handles open)."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise _damaged(path, e) from e
    image.filename = str(path)
    return image


# ----------------------------------------------------------------------------- checksums


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, publisher: str) -> None:
    """Refuse a file whose md5 differs from the one ``publisher`` (a torchvision class) lists."""
    got = md5_of(path)
    if got != expected:
        raise DataError(
            f"{path} does not match the md5 that {publisher} publishes for it ({got}, expected "
            f"{expected}): delete it and download it again, or set data.verify_checksums=false "
            "if you made this file yourself"
        )
