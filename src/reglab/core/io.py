"""File writes that a kill cannot leave half done."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write to a temporary file beside ``path`` and rename it, so a kill never leaves a truncated
    file. The temporary name holds the process id: two processes writing one path never share it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
