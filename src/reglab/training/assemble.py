"""From a composed config to the objects of one run: DataModule, Classifier, Trainer."""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig
from torch import nn

from reglab.core.config import to_plain
from reglab.core.errors import ConfigError, warn
from reglab.data import DataModule
from reglab.regularizers import cannot_stop_early
from reglab.training import multistep
from reglab.training.checkpoint import MidEpochResume, RngStates, SafeCheckpointIO
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


def build(cfg: DictConfig | dict) -> tuple[DataModule, Classifier]:
    """The run's DataModule (set up) and Classifier, from a composed config or the same as plain
    dicts (a stacked job's members: creating a DictConfig costs ~20 ms)."""
    k = multistep.check(cfg.get("execution") or {})
    dm = DataModule(**to_plain(cfg["data"]), seed=cfg["seed"])
    # Now, so that missing or corrupt files and a too large subset fail before any Trainer.
    dm.setup("fit")
    cls = multistep.MultiStepClassifier if k > 1 else Classifier
    model = cls(
        model=to_plain(cfg["model"]),
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        mean=dm.mean,
        std=dm.std,
        optimizer=to_plain(cfg["optimizer"]),
        scheduler=to_plain(cfg.get("scheduler")) or None,
        regularizer=to_plain(cfg.get("regularizer")),
        augmentation=to_plain(cfg.get("augmentation")),
        data=to_plain(cfg["data"]),
        execution={
            k_: v
            for k_, v in to_plain(cfg.get("execution") or {}).items()
            if k_ != "steps_per_execution"
        },
    )
    if k > 1:
        model.steps_per_execution = k
    check_batch_norm(dm, model)
    return dm, model


def check_batch_norm(dm: DataModule, model: Classifier) -> None:
    """Batch norm computes its statistics over the training batch: one example is no batch."""
    norms = [m for m in model.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms and dm.batch_size < 2:
        raise ConfigError(
            f"data.batch_size={dm.batch_size}: model={model.hparams.model.get('name')} has batch "
            "norm layers, which need at least 2 examples per training batch; use data.batch_size "
            ">= 2 (16 or more for useful statistics)"
        )


# What the Classifier logs while fitting: what EarlyStopping and ModelCheckpoint can monitor.
# tests/test_reliability.py checks it against a real run's history, so it cannot fall behind.
FIT_METRICS = (
    "val/loss",
    "val/acc",
    "val/acc_best",
    "train/loss",
    "train/acc",
    "weights/l1",
    "weights/l2",
    "weights/sparsity",
)


def config_callbacks(cfg: DictConfig) -> list[tuple[str, pl.Callback]]:
    """``cfg.callbacks``, instantiated, with their keys; a constructor's complaint becomes one
    line with the key."""
    out = []
    for name, c in (cfg.get("callbacks") or {}).items():
        if c is None:
            continue
        try:
            out.append((f"callbacks.{name}", instantiate(c)))
        except Exception as e:  # hydra wraps it; the innermost cause says what is wrong
            cause = e
            while cause.__cause__ is not None:
                cause = cause.__cause__
            raise ConfigError(f"callbacks.{name}: {str(cause).strip().splitlines()[0]}") from e
    return out


def check_callbacks(named: list[tuple[str, pl.Callback]], trainer_kwargs: dict) -> None:
    """Refuse a monitor that no metric answers (Lightning would fail after the first epoch);
    warn where a callback cannot act at these settings."""
    for key, cb in named:
        monitor = getattr(cb, "monitor", None)
        if isinstance(cb, (pl.callbacks.EarlyStopping, pl.callbacks.ModelCheckpoint)) and (
            monitor is not None and monitor not in FIT_METRICS
        ):
            raise ConfigError(
                f"{key}.monitor={monitor} is not a metric a run logs; choose from {list(FIT_METRICS)}"
            )
        if isinstance(cb, pl.callbacks.EarlyStopping) and key.startswith("callbacks."):
            note = cannot_stop_early(f"{key}.patience", cb.patience, trainer_kwargs)
            if note:  # a technique's own early stopping says so itself
                warn(note)
    stoppers = [k for k, cb in named if isinstance(cb, pl.callbacks.EarlyStopping)]
    averagers = [k for k, cb in named if isinstance(cb, pl.callbacks.StochasticWeightAveraging)]
    if stoppers and averagers and not trainer_kwargs.get("fast_dev_run"):
        warn(
            f"{averagers[0]} with {stoppers[0]}: if early stopping ends the run before "
            "trainer.max_epochs, Lightning never puts the SWA average in place and the test uses "
            "the last weights"
        )


def build_trainer(
    cfg: DictConfig, dm: DataModule, model: Classifier, extra_callbacks=()
) -> pl.Trainer:
    """The Trainer of a run: config callbacks and loggers plus each technique's additions."""
    quiet_lightning()
    named = config_callbacks(cfg)
    for name, t in model.techniques.items():
        named += [(f"regularizer.{name}", cb) for cb in t.callbacks()]
    callbacks = [cb for _, cb in named]
    kwargs = dict(to_plain(cfg.trainer))
    kwargs.pop("_target_", None)
    for t in model.techniques.values():
        kwargs = t.trainer_kwargs(kwargs)
    check_callbacks(named, kwargs)
    loggers = make_loggers(cfg)
    callbacks += tracking_callbacks(loggers)
    if isinstance(model, multistep.MultiStepClassifier):
        multistep.configure(dm, model, kwargs, callbacks)
    has_ckpt = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    kwargs.setdefault("enable_checkpointing", has_ckpt)
    # Atomic checkpoint writes and weights-only loads, for every save and load the Trainer does.
    plugins = [
        *(kwargs.pop("plugins", None) or []),
        SafeCheckpointIO(trust=bool(cfg.get("trust_checkpoint"))),
    ]
    try:
        trainer = pl.Trainer(
            **kwargs,
            plugins=plugins,
            callbacks=[
                *callbacks,
                RngStates(),
                MidEpochResume(),
                PlainCudaCheck(),
                *extra_callbacks,
            ],
            logger=loggers or False,
            use_distributed_sampler=False,
        )
    except (MisconfigurationException, TypeError, ValueError) as e:  # e.g. trainer=gpu, no GPU
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]}") from e
    for lg in trainer.loggers:
        lg.log_hyperparams(to_plain(cfg))
    return trainer
