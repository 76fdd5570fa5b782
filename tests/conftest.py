"""Shared test helpers: compose and run configs in-process, call the CLI, write tiny datasets.

The dataset writers produce files in torchvision's exact on-disk formats (gzipped IDX for the
MNIST family, python pickles for CIFAR), so the tests exercise the real loading code.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import reglab.cli  # noqa: F401  (registers reglab's resolvers, as the console scripts do)
from reglab.core.paths import CONF_DIR, ROOT_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: one torch thread per worker (and per CLI subprocess it starts),
    # since two workers of two threads each oversubscribe the cores and every step slows down.
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

FAST = ["debug=fast", "logger=csv", "callbacks=none"]
# One short epoch that still logs (fast_dev_run replaces every logger by a dummy).
ONE_SHORT_EPOCH = [
    "callbacks=none",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
]


def compose_cfg(overrides: list[str], out_dir: Path, data_dir: Path | None = None):
    """The config ``reglab-train OVERRIDES`` would run, writing into ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        extra = [f"paths.data_dir={data_dir}"] if data_dir else []
        cfg = compose("train", overrides=[*extra, *overrides], return_hydra_config=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        del cfg["hydra"]
    return cfg


def train(overrides: list[str], out_dir: Path, data_dir: Path | None = None) -> dict:
    """Run one training in this process; returns the metrics.json summary."""
    from reglab.train import run

    return run(compose_cfg(overrides, out_dir, data_dir))


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run a console script (``reglab-train``, ...) as a user would; returns CompletedProcess."""
    exe = Path(sys.executable).parent / args[0]
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [str(exe), *args[1:]],
        cwd=cwd or ROOT_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def popen_train(*overrides: str) -> subprocess.Popen:
    """``reglab-train OVERRIDES`` in the background (stderr kept for failures), as a user would.
    PYTHONPATH holds the repository, so configs may name classes of tests/ (callbacks)."""
    exe = Path(sys.executable).parent / "reglab-train"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT_DIR)}
    return subprocess.Popen(
        [str(exe), *overrides],
        cwd=ROOT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it dies or ``timeout`` passes."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


# ----------------------------------------------------------------------------- tiny datasets


def _idx_bytes(array: np.ndarray) -> bytes:
    dims = array.shape
    return (
        struct.pack(">HBB", 0, 0x08, len(dims))
        + struct.pack(f">{len(dims)}I", *dims)
        + (array.astype(np.uint8).tobytes())
    )


def write_idx_dataset(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> None:
    """MNIST-format files (gzipped IDX) with a learnable pattern: class c lights row block c."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 250
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(_idx_bytes(images))
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(_idx_bytes(labels))


def write_cifar_dataset(root: Path, hundred: bool, n_per_file: int = 100, seed: int = 0) -> None:
    """CIFAR-format python pickles: 5 train batches + test (CIFAR-10) or train + test (CIFAR-100)."""
    rng = np.random.default_rng(seed)
    k = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    names = (
        ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    )
    for name in names:
        n = n_per_file * (5 if hundred and name == "train" else 1)
        labels = (np.arange(n) % k).tolist()
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        entry = {"data": data, ("fine_labels" if hundred else "labels"): labels}
        if hundred:
            entry["coarse_labels"] = [c // 5 for c in labels]
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory) -> Path:
    """A data_dir holding tiny MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 in torchvision's layout."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", seed=1)
    write_idx_dataset(root / "FashionMNIST" / "raw", seed=2)
    write_cifar_dataset(root, hundred=False)
    write_cifar_dataset(root, hundred=True, n_per_file=300)
    return root


# ----------------------------------------------------------------------------- W&B offline runs


def read_wandb_run(run_dir: Path) -> dict:
    """Decode an offline run's ``run-*.wandb`` file, the records ``wandb sync`` would upload.

    The file is a 7-byte header (``:W&B``, magic, version) then a LevelDB-style log: 32 KiB
    blocks of chunks, each ``crc32 (4) | length (2, little-endian) | type (1) | payload``, with
    types full=1, first=2, middle=3, last=4. Each payload is a wandb ``Record`` protobuf.
    Returns config, history rows, summary, the run record (name, group, tags, job type) and the
    paths of logged files (media, tables) relative to the run's ``files/`` folder.
    """
    import json as _json

    from wandb.proto import wandb_internal_pb2 as pb

    # ``run.finish()`` returns before wandb's service has written the file; shutting the service
    # down waits for it (a later wandb.init starts a new one).
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    (path,) = Path(run_dir).glob("run-*.wandb")
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, pending, payloads = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer too small for a header: skip to next block
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        chunk = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            payloads.append(pending)
            pending = b""
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    out: dict = {"config": {}, "history": [], "summary": {}, "run": {}, "files": []}
    for data in payloads:
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {
                "name": r.display_name,
                "group": r.run_group,
                "job_type": r.job_type,
                "tags": list(r.tags),
                "project": r.project,
                "notes": r.notes,
            }
        elif kind == "files":
            out["files"] += [f.path for f in rec.files.files]
        elif kind == "config":
            for item in rec.config.update:
                out["config"][key(item)] = _json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key(i): _json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][key(item)] = _json.loads(item.value_json)
    return out
