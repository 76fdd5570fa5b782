"""File formats: IDX, CIFAR pickles under the restricted unpickler, PIL images, md5."""

import os
import pathlib
import pickle

import numpy as np
import pytest
from PIL import Image

from reglab.core.errors import DataError
from reglab.data import read_idx
from reglab.data.formats import check_md5, cifar_arrays, read_cifar_batch, stack_images

from .files import cifar_bytes, md5_of, patterned, py2_pickle, write_idx


def test_idx_gzipped_and_raw_read_the_same(tmp_path):
    images, _ = patterned(7, 10, (28, 28), seed=4)
    a = read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", images))
    b = read_idx(write_idx(tmp_path / "x-idx3-ubyte", images))
    assert a.shape == (7, 28, 28) and np.array_equal(a, images) and np.array_equal(b, images)


def test_idx_of_another_type_is_refused(tmp_path):
    path = tmp_path / "ints-idx1-int"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + bytes(12))  # int32 IDX
    with pytest.raises(DataError, match="ints-idx1-int.*unsigned-byte"):
        read_idx(path)


@pytest.mark.parametrize("style", ["py2", "py3-2", "py3-4", "py3-5"])
def test_cifar_batch_reads_as_each_writer_wrote_it(tmp_path, style):
    images, labels = patterned(12, 10, (3, 32, 32), seed=1)
    entry = {
        "batch_label": "training batch 1 of 5",
        "labels": labels.tolist(),
        "data": images.reshape(12, -1),
        "filenames": [f"f{i}.png" for i in range(12)],
    }
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_bytes(entry, style))
    batch = read_cifar_batch(path)
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}  # str keys in every style
    x, y = cifar_arrays(path, "labels")
    assert x.dtype == np.uint8 and np.array_equal(x, images) and np.array_equal(y, labels)


def test_py2_batch_names_only_numpy_reconstruction():
    """What the restricted unpickler must allow: the globals of a batch written by Python 2."""
    import pickletools

    raw = py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
    names = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


class _Calls:
    """Pickles as ``fn(*args)``: what a tampered file does to whoever loads it."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("how", ["open", "os.system", "Path.touch"])
def test_batch_that_would_create_a_file_is_refused_and_creates_nothing(tmp_path, how):
    target = tmp_path / "created_by_pickle"
    payload = {
        "open": _Calls(open, str(target), "w"),
        "os.system": _Calls(os.system, f"touch {target}"),
        "Path.touch": _Calls(pathlib.Path.touch, pathlib.Path(target)),
    }[how]
    raw = pickle.dumps({"data": payload, "labels": [0]}, protocol=4)
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    with pytest.raises(
        DataError, match=r"data_batch_1 is not a CIFAR batch: it calls .* not loaded"
    ):
        read_cifar_batch(path)
    assert not target.exists()
    pickle.loads(raw)  # the same bytes through plain pickle: the file appears (the test can fail)
    assert target.exists()


def test_codecs_encode_is_allowed_for_latin1_only(tmp_path):
    path = tmp_path / "batch"
    # _codecs.encode('abc', 'rot13'): a protocol-2 call shaped like a Python 3 bytes object.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(
        DataError, match="not a CIFAR batch: it calls _codecs.encode with encoding 'rot13'"
    ):
        read_cifar_batch(path)


@pytest.mark.parametrize("damage", ["truncate", "float data", "no labels", "not a dict"])
def test_damaged_cifar_batch_is_named(tmp_path, damage):
    images, labels = patterned(4, 10, (3, 32, 32), seed=0)
    entry = {"data": images.reshape(4, -1), "labels": labels.tolist()}
    if damage == "float data":
        entry["data"] = entry["data"].astype(np.float32)
    if damage == "no labels":
        del entry["labels"]
    raw = pickle.dumps([1, 2] if damage == "not a dict" else entry, protocol=2)
    path = tmp_path / "data_batch_2"
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else raw)
    with pytest.raises(DataError, match="corrupt or truncated data file .*data_batch_2.*delete it"):
        cifar_arrays(path, "labels")


def test_images_become_rgb_when_any_is_colour_and_grey_otherwise():
    grey = Image.fromarray(np.full((5, 6), 90, np.uint8))
    rgb = Image.fromarray(np.dstack([np.full((5, 6), v, np.uint8) for v in (10, 20, 30)]))
    mixed = stack_images([grey, rgb], None, "test")
    assert mixed.shape == (2, 3, 5, 6) and (mixed[0] == 90).all() and mixed[1, 2, 0, 0] == 30
    assert stack_images([grey, grey.convert("1")], None, "test").shape == (2, 1, 5, 6)
    palette = rgb.convert("P")
    assert stack_images([palette], None, "test").shape == (1, 3, 5, 6)


def test_images_of_different_sizes_are_refused_unless_resized():
    a, b = Image.fromarray(np.zeros((5, 6), np.uint8)), Image.fromarray(np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"my folder: images differ in size .*data.image_size"):
        stack_images([a, b], None, "my folder")
    assert stack_images([a, b], (4, 7), "my folder").shape == (2, 1, 4, 7)


def test_md5_mismatch_names_the_file_and_the_way_out(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"not the published bytes")
    check_md5(path, md5_of(path), "torchvision.datasets.MNIST")  # equal: silent
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte.gz does not match the md5 .*"
        r"torchvision.datasets.MNIST.*delete it.*data.verify_checksums=false",
    ):
        check_md5(path, "0" * 32, "torchvision.datasets.MNIST")
