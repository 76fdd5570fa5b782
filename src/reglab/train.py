"""``reglab-train``: compose the config, seed, build everything, fit, test, write metrics.json."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (before torch loads OpenMP). With the cores
# shared (pytest -n 2, sweep jobs, other users), spinning threads take the cores the working
# threads wait for: 10x slower steps were measured here. OMP_WAIT_POLICY=active restores it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

import reglab.compare  # noqa: F401  (registers the `technique` config group)
from reglab.checkpoint import (
    RngStates,
    SafeCheckpointIO,
    check_compatible,
    load_checkpoint,
    resumable,
)
from reglab.config import CONF_DIR, check_config, run_name, to_plain
from reglab.data import DataModule
from reglab.errors import ConfigError, ReglabError
from reglab.module import Classifier, check_steps_per_execution
from reglab.tracking import finish_failed, finish_wandb, make_loggers, tracking_callbacks

METRIC_KEYS = (
    "train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc",
    "test/ece", "gap/acc", "train_eval/acc", "weights/l1", "weights/l2", "weights/sparsity",
)  # fmt: skip


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file and rename it, so a kill never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def techniques_of(cfg: DictConfig) -> dict[str, list[str]]:
    return {
        "regularizer": sorted(cfg.get("regularizer") or {}),
        "augmentation": sorted(cfg.get("augmentation") or {}),
    }


def build(cfg: DictConfig) -> tuple[DataModule, Classifier]:
    # Checked before the DataModule batches with it (the Classifier checks it again, for eval).
    k = check_steps_per_execution(cfg.trainer.get("steps_per_execution", 1))
    dm = DataModule(**to_plain(cfg.data), seed=cfg.seed, steps_per_execution=k)
    dm.setup("fit")  # now, so missing or corrupt files and a too large subset fail before any Trainer
    model = Classifier(
        model=to_plain(cfg.model),
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        mean=dm.mean,
        std=dm.std,
        optimizer=to_plain(cfg.optimizer),
        regularizer=to_plain(cfg.get("regularizer")),
        augmentation=to_plain(cfg.get("augmentation")),
        data=to_plain(cfg.data),
        steps_per_execution=k,
    )
    return dm, model


def resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    if cfg.get("resume"):
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            return str(last)
        print(f"reglab: resume=true: no {last} yet; training from the start", file=sys.stderr)
    return None


# Callbacks that act after every optimizer step, which steps_per_execution > 1 would thin out.
BATCH_CALLBACKS = (pl.callbacks.EMAWeightAveraging, pl.callbacks.GradientAccumulationScheduler)


def build_trainer(cfg: DictConfig, model: Classifier, extra_callbacks=()) -> pl.Trainer:
    """The Trainer of a run: config callbacks and loggers plus each technique's additions."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    for t in model.techniques.values():
        callbacks += t.callbacks()
    loggers = make_loggers(cfg)
    callbacks += tracking_callbacks(loggers)
    trainer_kwargs = dict(to_plain(cfg.trainer))
    for t in model.techniques.values():
        trainer_kwargs = t.trainer_kwargs(trainer_kwargs)
    trainer_kwargs.pop("_target_", None)
    trainer_kwargs.pop("steps_per_execution", None)  # reglab's key, held by the Classifier
    k = model.steps_per_execution
    if k > 1:  # Lightning runs its per-batch hooks once per k steps: refuse what relies on them
        per_batch = [type(c).__name__ for c in callbacks if isinstance(c, BATCH_CALLBACKS)]
        clip = trainer_kwargs.get("gradient_clip_val")
        accumulate = trainer_kwargs.get("accumulate_grad_batches", 1)
        if per_batch or clip or accumulate != 1:
            what = per_batch[0] if per_batch else ("gradient clipping" if clip else "accumulation")
            raise ConfigError(
                f"trainer.steps_per_execution={k} does not work with {what} (it acts once per "
                "Lightning batch); use trainer.steps_per_execution=1"
            )
    has_ckpt = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    trainer_kwargs.setdefault("enable_checkpointing", has_ckpt)
    # Atomic checkpoint writes and weights-only loads, for every save and load the Trainer does.
    plugins = [*(trainer_kwargs.pop("plugins", None) or []),
               SafeCheckpointIO(trust=bool(cfg.get("trust_checkpoint")))]  # fmt: skip
    try:
        trainer = pl.Trainer(
            **trainer_kwargs,
            plugins=plugins,
            callbacks=[*callbacks, RngStates(), *extra_callbacks],
            logger=loggers or False,
            use_distributed_sampler=False,
        )
    except (MisconfigurationException, TypeError, ValueError) as e:  # e.g. trainer=gpu, no GPU
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]}") from e
    for lg in trainer.loggers:
        lg.log_hyperparams(to_plain(cfg))
    return trainer


def fit_and_test(cfg: DictConfig, out_dir: Path) -> dict:
    start = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model = build(cfg)
    trainer = build_trainer(cfg, model)

    ckpt_cb = trainer.checkpoint_callback
    ckpt_dir = (
        Path(ckpt_cb.dirpath)
        if ckpt_cb is not None and ckpt_cb.dirpath
        else out_dir / "checkpoints"
    )
    ckpt_path = resume_path(cfg, ckpt_dir)
    if ckpt_path:  # one clear line instead of Lightning's traceback for a foreign checkpoint
        trust = bool(cfg.get("trust_checkpoint"))
        check_compatible(load_checkpoint(ckpt_path, trust), model, ckpt_path)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    final_weights = any(t.final_weights for t in model.techniques.values())
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    test_ckpt = best if best and not final_weights and not trainer.fast_dev_run else None
    results = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, verbose=False)

    metrics = {**fit_metrics, **({k: float(v) for k, v in results[0].items()} if results else {})}
    return {
        "status": "ok",
        **{k: metrics[k] for k in METRIC_KEYS if k in metrics},
        "epochs_trained": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "best_checkpoint": best or None,
        "tested": "final weights" if test_ckpt is None else "best checkpoint",
        "history": model.history,
        "wall_time_s": time.time() - start,
        "trainer": trainer,
    }


def run(cfg: DictConfig) -> dict:
    """Train and test one configuration; write ``metrics.json`` into the run's output folder."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    summary = fit_and_test(cfg, out_dir)
    trainer = summary.pop("trainer")
    summary.update(
        name=run_name(cfg),
        techniques=techniques_of(cfg),
        seed=int(cfg.seed),
        data=cfg.data.name,
        model=cfg.model.name,
        fold=cfg.data.get("fold") if cfg.data.get("num_folds") else None,
    )
    if trainer.is_global_zero:
        write_json_atomic(out_dir / "metrics.json", summary)
    finish_loggers(trainer, summary)
    return summary


def finish_loggers(trainer: pl.Trainer, summary: dict) -> None:
    """Give W&B the run's summary and close the run, so each job of a sweep is its own run."""
    if trainer.is_global_zero:
        finish_wandb(trainer.loggers, summary)


def fail(msg: str, code: int = 2) -> None:
    print(f"reglab: error: {msg}", file=sys.stderr)
    sys.exit(code)


@resumable  # loads .env; resume=true reuses the previous run's folder (see reglab.checkpoint)
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    try:
        summary = run(cfg)
    except Exception as e:  # any failure costs this job only; KeyboardInterrupt still stops all
        error = str(e) if isinstance(e, ReglabError) else f"{type(e).__name__}: {e}"
        finish_failed(error)
        out = Path(cfg.paths.output_dir)
        if out.is_dir():
            write_json_atomic(
                out / "metrics.json",
                {"status": "failed", "error": error, "name": run_name(cfg), "seed": cfg.get("seed"),
                 "data": cfg.data.get("name"), "model": cfg.model.get("name"),
                 "global_step": getattr(e, "step", None),
                 "techniques": techniques_of(cfg), "traceback": traceback.format_exc()},
            )  # fmt: skip
        if multirun:
            # Returning (not raising) lets Hydra's launcher go on with the next job and reach
            # on_multirun_end, where reglab.report.ReportCallback lists the failure and exits 1.
            # None, not NaN: Hydra's Optuna sweeper records a trial that returns no number as
            # failed and goes on, while NaN makes optuna 2.x raise and ends the whole search.
            print(f"reglab: error: job {out.name} failed: {error}", file=sys.stderr)
            return None
        if not isinstance(e, ReglabError):
            raise
        fail(str(e))
        return None
    acc = summary.get("test/acc")
    print(
        f"reglab: {summary['name']} on {summary['data']}/{summary['model']}: "
        f"test/acc={acc:.4f} in {summary['wall_time_s']:.1f}s -> {cfg.paths.output_dir}/metrics.json"
    )
    if cfg.get("target_acc") is not None:  # speedruns: time from process start, imports included
        import psutil

        since_start = time.time() - psutil.Process().create_time()
        verdict = "reached" if acc >= cfg.target_acc else "MISSED"
        print(
            f"reglab: time-to-accuracy: {verdict} test/acc {acc:.4f} (target {cfg.target_acc}) "
            f"in {since_start:.1f}s wall clock"
        )
    return summary.get("val/acc_best")


if __name__ == "__main__":
    main()
