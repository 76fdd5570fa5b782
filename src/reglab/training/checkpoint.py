"""Checkpoints that survive a kill and load safely (``resume=true`` itself: ``reglab.cli``).

- ``SafeCheckpointIO`` writes each checkpoint to a temporary file in the same folder, fsyncs it
  and renames it over the old one, so a kill mid-write leaves the previous checkpoint intact.
  It loads with ``torch.load(weights_only=True)`` unless ``trust_checkpoint=true``.
- ``RngStates`` stores the torch/CUDA/numpy/python random states in every checkpoint and puts
  them back when training resumes, so dropout, noise and mixup draw the same numbers as in a run
  that was never stopped. The batch order is a function of (seed, epoch).
- ``MidEpochCheckpoint`` (``callbacks.mid_epoch_checkpoint``) keeps ``last.ckpt`` current inside
  long epochs, every N steps or T minutes; ``MidEpochResume`` restores what a resume from such a
  checkpoint needs beyond Lightning's loop state, so it ends as if the run had never stopped:
  the loader's place in the epoch (``IndexBatches.state_dict``), the epoch's running training
  sums, and the after-step technique hooks the saved step had not had yet.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from reglab.core.errors import ConfigError

# ----------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """Load a checkpoint's dict; refuse arbitrary pickled objects unless ``trust``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"{path} holds pickled objects beyond tensors and plain containers, which can run code "
            f"when loaded; refused. If you made it or fully trust it, pass trust_checkpoint=true "
            f"({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(
            f"{path} is not a readable checkpoint ({str(e).splitlines()[0]}); is it truncated? "
            "delete it or pass another ckpt_path"
        ) from e


def _describe(hp: dict) -> str:
    model = (hp.get("model") or {}).get("name")
    data = (hp.get("data") or {}).get("name")
    return f"model={model} on data={data} ({hp.get('num_classes')} classes)"


def check_compatible(ckpt: dict, model: pl.LightningModule, path: str | Path) -> None:
    """Refuse, in one line, a checkpoint saved by another model, dataset or network shape.

    Lightning would otherwise fail deep inside ``load_state_dict`` with a long traceback.
    """
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(
            f"ckpt_path={path} is not a reglab checkpoint (no hyper_parameters/state_dict)"
        )
    mine = dict(model.hparams)
    key = lambda h: (  # noqa: E731
        (h.get("model") or {}).get("name"),
        (h.get("data") or {}).get("name"),
        h.get("num_classes"),
        list(h.get("input_shape") or []),
    )
    if key(hp) != key(mine):
        raise ConfigError(
            f"ckpt_path={path} was saved by {_describe(hp)} but this run is {_describe(mine)}: "
            "use the checkpoint's model and data, or drop ckpt_path"
        )
    own, theirs = model.state_dict(), ckpt["state_dict"]
    problems = [f"missing {k}" for k in own.keys() - theirs.keys()]
    problems += [f"unexpected {k}" for k in theirs.keys() - own.keys()]
    problems += [
        f"{k} is {tuple(theirs[k].shape)} there, {tuple(own[k].shape)} here"
        for k in own.keys() & theirs.keys()
        if getattr(theirs[k], "shape", None) != own[k].shape
    ]
    if problems:
        shown = "; ".join(sorted(problems)[:3]) + (" ..." if len(problems) > 3 else "")
        raise ConfigError(
            f"ckpt_path={path} does not fit this run's network ({shown}): it was saved with other "
            "model settings or techniques; use the same ones, or drop ckpt_path"
        )


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves (temp file + fsync + rename) and weights-only loads."""

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = trust

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=not self.trust)
        return load_checkpoint(path, self.trust)


# ----------------------------------------------------------------------------- random states


def get_rng_states() -> dict:
    """Every random state a run draws from, as types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngStates(pl.Callback):
    """Saves the random states with each checkpoint; restores them when training resumes.

    They are applied at ``on_train_start``, after the sanity check and data setup, which is the
    point in a resumed run that matches the moment they were saved in the original one. With
    DDP each rank has its own states and only rank 0's are saved: an exact resume needs 1 device.
    """

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return get_rng_states()

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending:
            set_rng_states(self._pending)
            self._pending = None


# ----------------------------------------------------------------------------- mid-epoch resume


class MidEpochCheckpoint(pl.callbacks.ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps or ``train_time_interval``, inside epochs.

    Lightning's ModelCheckpoint with two changes: no save at the end of training (below), and
    none on the last batch of an epoch. Such a
    checkpoint precedes the epoch's validation and ``on_train_epoch_end``, which a run resumed
    from it never does (Lightning counts the epoch as finished), so the epoch-end checkpoint of
    ``last_checkpoint``, written moments later, is the one to keep. Both write ``last.ckpt``:
    set ``enable_version_counter: false`` on both, or each writes a ``last-v1.ckpt`` of its own.
    """

    def __init__(self, *args, every_n_train_steps=None, train_time_interval=None, **kwargs):
        if every_n_train_steps and train_time_interval:  # Lightning's message does not say how
            raise ConfigError(
                f"every_n_train_steps={every_n_train_steps} and train_time_interval="
                f"{train_time_interval} are both set; set one of them to null"
            )
        super().__init__(
            *args,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            **kwargs,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        """Nothing: Lightning would write last.ckpt here if this callback never had, over the
        epoch-end one of ``last_checkpoint``, with the epoch counter already moved on."""


class MidEpochResume(pl.Callback):
    """What a checkpoint taken inside an epoch needs beyond Lightning's own loop state.

    - The epoch's running training sums (``Classifier.sums``), so the resumed epoch's
      ``train/loss`` and ``train/acc`` cover all its batches, not only those after the restart.
    - The training loader's position. Lightning saves it (``IndexBatches.state_dict``) but loads
      it only if it builds the loader after restoring the checkpoint; a schedule that asks for
      ``trainer.estimated_stepping_batches`` makes it build the loader first, and the state is
      never applied (Lightning issue #20550). It is applied here, before the first batch is drawn.
    - The technique hooks that run after each optimizer step (max-norm): Lightning saves a
      step checkpoint in the callbacks' ``on_train_batch_end``, before the module's, so the saved
      weights have not had them yet; a resumed run applies them once before going on.
    """

    KEY = "train_sums"

    def __init__(self):
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        sums = getattr(pl_module, "sums", None)
        if sums is not None and sums.loss is not None and sums.seen:
            checkpoint[self.KEY] = {
                "loss": sums.loss,
                "correct": sums.correct,
                "nonfinite": sums.nonfinite,
                "seen": sums.seen,
            }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module) -> None:
        sums, saved = getattr(pl_module, "sums", None), self._pending
        if sums is not None and saved:
            sums.reset(pl_module.device)
            for key in ("loss", "correct", "nonfinite"):
                getattr(sums, key).copy_(saved[key])
            sums.seen = int(saved["seen"])
        self._pending = None

        loop = trainer.fit_loop
        if loop.restarting and getattr(loop, "_combined_loader_states_to_load", None):
            loop._load_combined_loader_states()
        if loop.epoch_loop.restarted_on_train_batch_end and pl_module.automatic_optimization:
            after_step = getattr(pl_module, "after_step", None)
            if after_step is not None:
                after_step()
