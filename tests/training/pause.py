"""A callback for the kill tests: holds a fresh run still at a given step until it is killed.

It lives in its own module so that a ``reglab-train`` subprocess can instantiate it from the
command line (``+callbacks.pause._target_=tests.training.pause.PauseAt``, repository root on
PYTHONPATH) without importing the test modules.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAt(pl.Callback):
    """Before the batch of optimizer step ``step + 1``, write ``marker`` and wait to be killed.

    A resumed run (``trainer.ckpt_path`` set) passes through, so the same command can resume."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.ckpt_path is None and trainer.global_step == self.step:
            self.marker.write_text(str(batch_idx))
            while True:
                time.sleep(1)
