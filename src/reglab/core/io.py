"""File writes that a kill cannot leave half done."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends
    without an error, so a kill never leaves a truncated file and readers see the old or the new
    file, never half of one. The temporary name holds the host and process id (processes on
    several machines may share a sweep folder) and keeps the suffix (``savefig`` reads it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{socket.gethostname()}-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """``data`` as JSON at ``path``, written through ``atomic_path`` and fsynced."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def make_new_dir(path: str | Path) -> str:
    """Make and return folder ``path``, or ``path_2``, ``path_3``, ... if it exists already.

    ``os.mkdir`` succeeds for one process only, also on a shared filesystem, so runs (or sweeps)
    started in the same second under the same name each get a folder of their own; a timestamp
    alone gave them one folder and mixed their files.
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        folder = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            folder.mkdir()
            return str(folder)
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
