"""``reglab-train``: compose the config, seed, build everything, fit, test, write metrics.json."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (before torch loads OpenMP). With the cores
# shared (pytest -n 2, sweep jobs, other users), spinning threads take the cores the working
# threads wait for: 10x slower steps were measured here. OMP_WAIT_POLICY=active restores it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_IMPORTED_AT = time.time()

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from reglab.cli import entry_point
from reglab.core import checks
from reglab.core.config import run_name, techniques_of, to_plain
from reglab.core.errors import ConfigError, ReglabError, fail
from reglab.core.io import write_json_atomic
from reglab.core.names import TEST_ACC, VAL_ACC_BEST
from reglab.core.paths import CONF_SOURCE
from reglab.training.assemble import build, build_trainer
from reglab.training.checkpoint import check_compatible, load_checkpoint
from reglab.training.loggers import finish_failed, finish_wandb
from reglab.training.selection import (
    BEST_EPOCH,
    VAL_LOSS,
    VAL_LOSS_BEST,
    Best,
    BestWeights,
    evaluate,
)
from reglab.training.stack import (
    check_seeds,
    check_variants,
    fit_stack,
    member_config,
    not_stackable,
    variant_config,
)


def check_config(cfg: DictConfig) -> None:
    """The top-level keys no constructor owns; everything else is checked by its owner."""
    checks.number("seed", cfg.get("seed"), integer=True)
    if cfg.trainer.get("max_epochs") != -1:  # -1: no limit (with max_steps or early stopping)
        checks.positive("trainer.max_epochs", cfg.trainer.get("max_epochs"), integer=True)
    for key in ("max_steps", "min_epochs", "check_val_every_n_epoch"):
        if cfg.trainer.get(key) not in (None, -1):
            checks.number(f"trainer.{key}", cfg.trainer[key], integer=True)
    for key in ("resume", "trust_checkpoint"):
        checks.flag(key, cfg.get(key, False))
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not Path(str(ckpt)).is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such file")


def resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    if cfg.get("resume"):
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            return str(last)
        print(f"reglab: resume=true: no {last} yet; training from the start", file=sys.stderr)
    return None


def fit_and_test(cfg: DictConfig, out_dir: Path) -> tuple[dict, pl.Trainer]:
    start = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model = build(cfg)
    selection = BestWeights(Best.of(model.techniques.values()))
    trainer = build_trainer(cfg, dm, model, extra_callbacks=[selection])

    ckpt_cb = trainer.checkpoint_callback
    ckpt_dir = (
        Path(ckpt_cb.dirpath)
        if ckpt_cb is not None and ckpt_cb.dirpath
        else out_dir / "checkpoints"
    )
    ckpt_path = resume_path(cfg, ckpt_dir)
    if ckpt_path:  # one clear line instead of Lightning's traceback for a foreign checkpoint
        check_compatible(
            load_checkpoint(ckpt_path, bool(cfg.get("trust_checkpoint"))), model, ckpt_path
        )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if model.history:  # resumed after its last epoch, fit ran nothing: the values it had logged
        fit_metrics = {
            **{k: v for k, v in model.history[-1].items() if k != "epoch"},
            **fit_metrics,
        }

    # The weights tested (reglab.training.selection): the final ones for weight averaging, else
    # the best epoch's, from the checkpoint when it was chosen by the same rule, else from memory.
    best = selection.best
    final_weights = any(t.final_weights for t in model.techniques.values())
    best_ckpt = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    same_rule = ckpt_cb is not None and (ckpt_cb.monitor, ckpt_cb.mode) == (best.monitor, best.mode)
    test_ckpt, tested = None, "final weights"
    if final_weights or trainer.fast_dev_run or best.weights is None:
        best_epoch = int(trainer.current_epoch) - 1
        val_loss_best = evaluate(model, dm.val_dataloader())[VAL_LOSS] if model.history else None
    else:
        best_epoch = best.epoch
        val_loss_best = next(
            (r.get(VAL_LOSS) for r in model.history if r["epoch"] == best_epoch), None
        )
        if best_ckpt and same_rule:
            test_ckpt, tested = best_ckpt, "best checkpoint"
        else:
            model.model.load_state_dict(best.weights)
            tested = "best epoch"
    results = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, verbose=False)
    if cfg.trainer.get("limit_test_batches") == 0:  # a tuning trial: scored on validation only
        tested = None

    # Every scalar the module logged, under the name it logged it with: no list to keep up.
    metrics = {**fit_metrics, **({k: float(v) for k, v in results[0].items()} if results else {})}
    if val_loss_best is not None:
        metrics[VAL_LOSS_BEST] = float(val_loss_best)
    summary = {
        "status": "ok",
        **dict(sorted(metrics.items())),
        BEST_EPOCH: best_epoch,
        "epochs_trained": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "best_checkpoint": best_ckpt or None,
        "tested": tested,
        "history": model.history,
        "wall_time_s": time.time() - start,
        "num_classes": int(model.hparams.num_classes),
    }
    return summary, trainer


def describe(cfg: DictConfig | dict) -> dict:
    """What a run was: written into metrics.json, whether it succeeded or failed."""
    data = cfg["data"]
    return {
        "name": run_name(cfg),
        "techniques": techniques_of(cfg),
        "seed": cfg.get("seed"),
        "data": data.get("name"),
        "model": cfg["model"].get("name"),
        "fold": data.get("fold") if data.get("num_folds") else None,
        "protocol": to_plain(cfg.get("protocol")),  # stage, technique, trial of a comparison
    }


def run(cfg: DictConfig) -> dict:
    """Train and test one configuration; write ``metrics.json`` into the run's output folder."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    summary, trainer = fit_and_test(cfg, out_dir)
    summary.update(describe(cfg))
    if trainer.is_global_zero:
        write_json_atomic(out_dir / "metrics.json", summary)
        finish_wandb(trainer.loggers, summary)  # each job of a sweep is its own W&B run
    return summary


def run_stack(cfg: DictConfig) -> list[dict]:
    """``seeds=[...]``: one member per seed in one Trainer (``reglab.training.stack``); member S
    writes ``seed_S/metrics.json``, the file its single run ``seed=S data.split_seed=S`` would
    write (plus ``stack_size``), failed or not. With ``variants=[{dir: D, set: {...}}, ...]``
    each seed of each variant is a member and writes ``D/seed_S/metrics.json``. What cannot be
    stacked (``not_stackable``) runs as those single runs, one after another in this process."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    seeds = check_seeds(to_plain(cfg.seeds))
    variants = [
        (folder, variant_config(cfg, values) if values else cfg)
        for folder, values in check_variants(to_plain(cfg.get("variants")))
    ]
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    alone, stacked = [], []
    epochs = {v.trainer.get("max_epochs") for _, v in variants}
    for folder, v in variants:
        reason = not_stackable(v)
        if reason is None and v.get("scheduler") and len(epochs) > 1:
            reason = "a scheduler, with variants of different trainer.max_epochs,"
        if reason is not None:
            where = f" ({folder})" if folder else ""
            print(f"reglab: seeds={seeds}{where}: {reason} cannot be stacked; they run one by one")
        (alone if reason else stacked).append((folder, v))
    summaries = [
        run_alone(v, s, out_dir / folder / f"seed_{s}") for folder, v in alone for s in seeds
    ]
    for member, summary in fit_stack(cfg, seeds, stacked) if stacked else []:
        summary.update(describe(member.cfg))
        summary["num_classes"] = int(member.module.hparams.num_classes)
        summary["stack_member"] = member.where
        folder = out_dir / member.where
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "metrics.json", summary)
        summaries.append(summary)
    return summaries


def run_alone(cfg: DictConfig, seed: int, out_dir: Path) -> dict:
    """Seed ``seed`` of a job that cannot be stacked: its single run, in ``out_dir``; a failure
    is written there and returned, and the next seed goes on."""
    one = cfg.copy()
    with open_dict(one):
        one.seed, one.data.split_seed, one.seeds = seed, seed, None
        one.paths.output_dir = str(out_dir)
    try:
        return run(one)
    except Exception as e:  # as a diverging member of a stack: this seed fails, the others go on
        error = record_failure(one, e)
        return {"status": "failed", "error": error, **describe(one)}


def record_failure(cfg: DictConfig, e: Exception) -> str:
    """Close W&B as failed and write a failed metrics.json; return the one-line error."""
    error = str(e) if isinstance(e, ReglabError) else f"{type(e).__name__}: {e}"
    finish_failed(error)
    out = Path(cfg.paths.output_dir)
    seeds = cfg.get("seeds")
    # A stacked job that failed as a whole: each of its members failed (an outcome, not a gap).
    targets = [(out, cfg)]
    if isinstance(to_plain(seeds), Sequence) and all(isinstance(s, int) for s in seeds):
        try:
            pairs = check_variants(to_plain(cfg.get("variants")))
        except ConfigError:
            pairs = [("", {})]
        variants = []
        for d, values in pairs:
            try:
                variants.append((d, variant_config(cfg, values) if values else cfg))
            except ConfigError:  # the error itself: each member in its own folder still
                variants.append((d, cfg))
        targets = [(out / d / f"seed_{s}", member_config(c, s)) for d, c in variants for s in seeds]
    for folder, run_cfg in targets:
        if out.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                folder / "metrics.json",
                {
                    "status": "failed",
                    "error": error,
                    **describe(run_cfg),
                    "global_step": getattr(e, "step", None),
                    "traceback": traceback.format_exc(),
                },
            )
    return error


def print_result(cfg: DictConfig, summary: dict, where: Path | None = None) -> None:
    acc = summary.get(TEST_ACC)
    # A tuning trial never touches the test set (trainer.limit_test_batches=0): its score is val.
    score = (
        f"test/acc={acc:.4f}"
        if acc is not None
        else f"{VAL_ACC_BEST}={summary.get(VAL_ACC_BEST, float('nan')):.4f} (not tested)"
    )
    path = Path(str(where or cfg.paths.output_dir)).resolve() / "metrics.json"
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        sweep = Path(str(HydraConfig.get().sweep.dir)).resolve()
        if path.is_relative_to(sweep):  # a sweep's job: its place in the sweep, one short line
            path = path.relative_to(sweep)
    print(
        f"reglab: {summary['name']} on {summary['data']}/{summary['model']}: "
        f"{score} in {summary['wall_time_s']:.1f}s -> {path}"
    )
    if (
        cfg.get("target_acc") is not None and acc is not None
    ):  # speedruns: time from process start, imports included
        since_start = process_age()
        verdict = "reached" if acc >= cfg.target_acc else "MISSED"
        print(
            f"reglab: time-to-accuracy: {verdict} test/acc {acc:.4f} (target {cfg.target_acc}) "
            f"in {since_start:.1f}s wall clock"
        )


def process_age() -> float:
    """Seconds since this process started, imports included: Linux's /proc (no psutil);
    elsewhere, since this module was imported."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT


@hydra.main(version_base="1.3", config_path=CONF_SOURCE, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    if multirun:  # a job's warnings go where its logging goes (a comparison's: its log file)
        logging.captureWarnings(True)
    try:
        summaries = run_stack(cfg) if cfg.get("seeds") is not None else [run(cfg)]
    except Exception as e:  # any failure costs this job only; KeyboardInterrupt still stops all
        error = record_failure(cfg, e)
        if multirun:
            # Returning (not raising) lets Hydra's launcher go on with the next job and reach
            # on_multirun_end, where the report lists the failure and exits 1.
            print(
                f"reglab: error: job {Path(cfg.paths.output_dir).name} failed: {error}",
                file=sys.stderr,
            )
            return None
        if not isinstance(e, ReglabError):
            raise
        fail(error)
        return None
    scores = []
    for summary in summaries:
        if summary["status"] == "ok":
            stacked = Path(cfg.paths.output_dir) / summary.get("stack_member", "")
            print_result(cfg, summary, stacked if cfg.get("seeds") is not None else None)
            scores.append(summary.get(VAL_ACC_BEST))
        else:
            print(f"reglab: seed {summary['seed']} failed: {summary['error']}", file=sys.stderr)
    # A stacked job's value for a sweeper: the mean over its members that finished.
    return sum(scores) / len(scores) if scores and None not in scores else None


main = entry_point(_main, "train", resume=True)

if __name__ == "__main__":
    main()
