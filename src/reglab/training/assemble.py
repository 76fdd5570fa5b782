"""From a composed config to the objects of one run: DataModule, Classifier, Trainer."""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from reglab.core.config import to_plain
from reglab.core.errors import ConfigError
from reglab.data import DataModule
from reglab.training import multistep
from reglab.training.checkpoint import RngStates, SafeCheckpointIO
from reglab.training.loggers import make_loggers, tracking_callbacks
from reglab.training.module import Classifier
from reglab.training.speed import PlainCudaCheck


def quiet_lightning() -> None:
    """Keep Lightning's tips, device banners and deprecation chatter out of the console;
    reglab's own lines, Lightning's warnings about real problems and the progress bar stay."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        r".*does not have many workers.*",  # reglab's loaders index tensors: workers would slow it
        r".*smaller than the logging interval.*",  # small datasets: epoch-level logging is enough
        r".*The `srun` command is available on your system but is not used.*",
        r".*Consider setting `persistent_workers=True`.*",
        r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pytorch_)?lightning.*")


def build(cfg: DictConfig) -> tuple[DataModule, Classifier]:
    k = multistep.check(cfg.get("execution") or {})
    dm = DataModule(**to_plain(cfg.data), seed=cfg.seed)
    dm.setup("fit")  # now, so missing or corrupt files and a too large subset fail before any Trainer
    cls = multistep.MultiStepClassifier if k > 1 else Classifier
    model = cls(
        model=to_plain(cfg.model),
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        mean=dm.mean,
        std=dm.std,
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.get("scheduler")) or None,
        regularizer=to_plain(cfg.get("regularizer")),
        augmentation=to_plain(cfg.get("augmentation")),
        data=to_plain(cfg.data),
        execution={k_: v for k_, v in to_plain(cfg.get("execution") or {}).items()
                   if k_ != "steps_per_execution"},
    )  # fmt: skip
    return dm, model


def build_trainer(cfg: DictConfig, dm: DataModule, model: Classifier, extra_callbacks=()) -> pl.Trainer:
    """The Trainer of a run: config callbacks and loggers plus each technique's additions."""
    quiet_lightning()
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    for t in model.techniques.values():
        callbacks += t.callbacks()
    loggers = make_loggers(cfg)
    callbacks += tracking_callbacks(loggers)
    kwargs = dict(to_plain(cfg.trainer))
    kwargs.pop("_target_", None)
    for t in model.techniques.values():
        kwargs = t.trainer_kwargs(kwargs)
    if isinstance(model, multistep.MultiStepClassifier):
        multistep.configure(multistep.check(cfg.execution), dm, model, kwargs, callbacks)
    has_ckpt = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    kwargs.setdefault("enable_checkpointing", has_ckpt)
    # Atomic checkpoint writes and weights-only loads, for every save and load the Trainer does.
    plugins = [*(kwargs.pop("plugins", None) or []),
               SafeCheckpointIO(trust=bool(cfg.get("trust_checkpoint")))]  # fmt: skip
    try:
        trainer = pl.Trainer(
            **kwargs,
            plugins=plugins,
            callbacks=[*callbacks, RngStates(), PlainCudaCheck(), *extra_callbacks],
            logger=loggers or False,
            use_distributed_sampler=False,
        )
    except (MisconfigurationException, TypeError, ValueError) as e:  # e.g. trainer=gpu, no GPU
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]}") from e
    for lg in trainer.loggers:
        lg.log_hyperparams(to_plain(cfg))
    return trainer
