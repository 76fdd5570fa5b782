"""Checkpoints that survive a kill and load safely, and ``resume=true``.

- ``SafeCheckpointIO`` writes each checkpoint to a temporary file in the same folder, fsyncs it
  and renames it over the old one, so a kill mid-write leaves the previous checkpoint intact.
  It loads with ``torch.load(weights_only=True)`` unless ``trust_checkpoint=true``.
- ``RngStates`` stores the torch/CUDA/numpy/python random states in every checkpoint and puts
  them back when training resumes, so dropout, noise and mixup draw the same numbers as in a run
  that was never stopped. The batch order needs no state: it is a function of (seed, epoch).
- ``resumable`` wraps the ``reglab-train`` entry point (after ``.env`` is loaded and unknown
  group options are refused in one line): with ``resume=true`` it finds the newest
  earlier run of the same command (same overrides, ``resume`` aside) and hands its folder to
  Hydra as ``hydra.run.dir``, before Hydra creates a new folder. The run then picks up that
  folder's ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import functools
import os
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from reglab.errors import ConfigError

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


# ----------------------------------------------------------------------------- resume=true


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def task_overrides(argv: list[str]) -> list[str]:
    """The task overrides of a command line: ``key=value`` words, not flags, not ``hydra.*``."""
    return [
        a
        for a in argv
        if "=" in a and not a.startswith("-") and not _key_of(a).startswith("hydra.")
    ]


def _same_command(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if _key_of(o) != "resume")


def previous_run(overrides: list[str], runs_root: Path) -> Path | None:
    """The newest folder under ``runs_root`` whose saved overrides equal ``overrides``
    (``resume=...`` aside on both sides)."""
    from omegaconf import OmegaConf

    want, found = _same_command(overrides), []
    for saved in Path(runs_root).glob("*/.hydra/overrides.yaml"):
        try:
            got = [str(o) for o in OmegaConf.load(saved)]
        except Exception:  # noqa: BLE001 - an unreadable folder is not the run we look for
            continue
        if _same_command(got) == want:
            found.append(saved)
    newest = max(found, key=lambda p: p.stat().st_mtime, default=None)
    return newest.parent.parent if newest is not None else None


def runs_root_of(overrides: list[str]) -> Path | None:
    """The folder that holds single runs for this command: the parent of ``hydra.run.dir``."""
    from hydra import compose, initialize_config_dir

    from reglab.config import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
            return Path(str(cfg.hydra.run.dir)).parent
    except Exception:  # noqa: BLE001 - a bad override: let Hydra's own run report it
        return None


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` plus ``hydra.run.dir=<previous run>`` when it asks for ``resume=true``."""
    overrides = task_overrides(argv)
    wants = any(_key_of(o) == "resume" and o.split("=", 1)[1].lower() == "true" for o in overrides)
    multirun = "-m" in argv or "--multirun" in argv
    explicit = any(_key_of(a) == "hydra.run.dir" for a in argv if "=" in a)
    if not wants or multirun or explicit or any(a in argv for a in ("--help", "-h", "--cfg", "-c")):
        return argv
    root = runs_root_of(overrides)
    if root is None:
        return argv
    folder = previous_run(overrides, root)
    if folder is None:
        print(
            f"reglab: resume=true: no earlier run of this command under {root}; starting a new one",
            file=sys.stderr,
        )
        return argv
    print(f"reglab: resume=true: continuing {folder}", file=sys.stderr)
    # Quoted for Hydra's override grammar, so any character in the folder name is safe.
    return [*argv, f"hydra.run.dir='{folder}'"]


def resumable(main):
    """Entry-point wrapper: load ``.env``, then resolve ``resume=true`` before Hydra starts."""

    from reglab.config import check_group_choices, with_env

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if not args and not kwargs:
            try:
                check_group_choices(task_overrides(sys.argv[1:]))
            except ConfigError as e:
                print(f"reglab: error: {e}", file=sys.stderr)
                sys.exit(2)
            sys.argv[1:] = resume_argv(sys.argv[1:])
        return main(*args, **kwargs)

    return with_env(wrapper)
