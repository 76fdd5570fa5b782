"""The progress bar of ``callbacks=default``: Lightning's rich bar, updated a few times a second."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class RichProgressBar(pl.callbacks.RichProgressBar):
    """``pytorch_lightning.callbacks.RichProgressBar`` whose training bar and metrics are updated
    at most every ``update_interval`` seconds (and on an epoch's last batch).

    Lightning's bar re-reads the metrics and marks the display dirty after every batch, ~0.1 ms of
    Python per step that a human cannot see (its render thread draws at ``refresh_rate`` anyway),
    and ~2% of a small model's CPU step (scripts/benchmark.py, ``lightning_vs_bare``).
    """

    def __init__(self, *args, update_interval: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.update_interval = update_interval
        self._next_update = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        # The first and last batch of an epoch always update: rich computes it/s from two
        # samples at least, and an epoch shorter than update_interval showed 0.00it/s.
        if (
            now < self._next_update
            and self.train_progress_bar_id is not None
            and 0 < batch_idx < self.total_train_batches - 1
        ):
            return
        self._next_update = now + self.update_interval
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
