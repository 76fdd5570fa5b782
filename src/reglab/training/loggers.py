"""Weights & Biases: one W&B run per training run, grouped by sweep, plus a report run per sweep.

What a training run holds (``logger=wandb`` or ``logger=many``):

- name: its techniques (``l2+dropout``, ``baseline``); group: the sweep folder's name in a
  multirun, so every job of one ``-m`` sweep (or Optuna search) sits in one W&B group;
- tags: the data, the model, each technique (or ``baseline``) and the user's ``tags=[...]``;
- config: the full composed config; summary: the scalars of ``metrics.json``;
- ``train/augmented``: a few images of the first training batch as the model sees them
  (after ``Classifier.prepare(x, train=True)``), logged once.

At the end of a sweep, ``log_report_table`` adds a run named ``report`` (job type ``report``) to
the sweep's group holding the report's ``results.csv`` as a ``wandb.Table`` and its plots.

The API key is read by wandb itself from ``wandb login``'s netrc or ``WANDB_API_KEY`` (which a
git-ignored ``.env`` may set); it is never put into the config, so it never reaches a log.

Without a key, or with a key and no route to the W&B server, ``wandb.init`` would stop the run
(``UsageError: No API key configured``), prompt at a terminal, or wait 90 s for the server. Unless
``WANDB_MODE`` or ``offline: true`` says what to do, such a run logs offline instead and prints
one line on how to log in and ``wandb sync`` it later.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytorch_lightning as pl
import torch
from dotenv import load_dotenv
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger

from reglab.core.errors import require_extra, warn
from reglab.core.paths import ROOT_DIR

IMAGES_KEY = "train/augmented"
REPORT_TABLE_KEY = "report/results"


def load_env_file() -> None:
    """Read ``WANDB_*`` settings from ``.env`` (repository root, then the working directory).

    Variables already set in the environment win, so a shell ``export`` overrides the file.
    """
    for path in (ROOT_DIR / ".env", Path.cwd() / ".env"):
        if path.is_file():
            load_dotenv(path, override=False)


def is_wandb(logger_cfg: Mapping | None) -> bool:
    return bool(logger_cfg) and str(logger_cfg.get("_target_", "")).endswith("WandbLogger")


def sweep_dir() -> Path | None:
    """The sweep folder when this job is part of a multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def sweep_group() -> str | None:
    """The sweep folder's name when this job is part of a multirun, else None."""
    folder = sweep_dir()
    return folder.name if folder is not None else None


def run_tags(cfg: DictConfig) -> list[str]:
    techniques = [*(cfg.get("regularizer") or {}), *(cfg.get("augmentation") or {})]
    tags = [str(cfg.data.name), str(cfg.model.name), *(sorted(techniques) or ["baseline"])]
    tags += [str(t) for t in (cfg.get("tags") or [])]
    # W&B refuses tags over 64 characters; duplicates would only clutter the run page.
    return list(dict.fromkeys(t[:64] for t in tags))


# ----------------------------------------------------------------------------- offline fallback

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_offline_told = False  # the one line is printed once per process (a sweep's jobs share one)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the server of ``url`` opens within ``timeout`` seconds."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True  # only the proxy knows the way: leave it to wandb
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:  # no DNS, no route, refused or timed out
        return False


def offline_reason(lg_cfg: Mapping) -> str | None:
    """Why a W&B run that nothing told to go offline cannot go online; None if it can."""
    if lg_cfg.get("offline") or os.environ.get("WANDB_MODE"):
        return None  # the user decided
    import wandb

    # wandb's own lookup (WANDB_API_KEY, netrc, settings files); prompt=False: never asks.
    if not wandb.login(prompt=False, verify=False):
        return "no W&B API key is configured"
    url = wandb.setup().settings.base_url
    if not _reachable(url):
        return f"the W&B server {url} cannot be reached"
    return None


def offline_runs_glob(save_dir: str | Path) -> str:
    """The offline runs this job (or, in a multirun, its sweep) writes, for ``wandb sync``."""
    group_dir = sweep_dir()
    if group_dir is not None:  # the jobs' runs and the sweep's report run
        return f"{group_dir}/*/wandb/offline-run-* {group_dir}/wandb/offline-run-*"
    return f"{save_dir}/wandb/offline-run-*"


def tell_offline(reason: str, runs: str) -> None:
    global _offline_told
    if not _offline_told:
        _offline_told = True
        warn(
            f"{reason}, so W&B logs offline; to upload, run `wandb login` once, then "
            f"`wandb sync {runs}` (WANDB_MODE=offline: no such line)"
        )


def make_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate ``cfg.logger``; the W&B logger gets the sweep group and the run's tags."""
    loggers = []
    for lg_cfg in (cfg.get("logger") or {}).values():
        if lg_cfg is None:
            continue
        if is_wandb(lg_cfg):
            load_env_file()
            extra = {"tags": run_tags(cfg)}
            if lg_cfg.get("group") is None:
                extra["group"] = sweep_group()
            reason = offline_reason(lg_cfg)
            if reason:  # wandb.init(mode=...): its settings are set up by now, so WANDB_MODE
                extra["mode"] = "offline"  # (what offline=True sets) would come too late
                tell_offline(reason, offline_runs_glob(lg_cfg.get("save_dir") or "."))
            loggers.append(instantiate(lg_cfg, **extra))
        else:
            if str(lg_cfg.get("_target_", "")).endswith("TensorBoardLogger"):
                require_extra("tensorboard", "tensorboard", "logger=tensorboard")
            loggers.append(instantiate(lg_cfg))
    return loggers


def wandb_loggers(loggers: Iterable[Logger]) -> list[WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def tracking_callbacks(loggers: Iterable[Logger]) -> list[pl.Callback]:
    return [WandbRun()] if wandb_loggers(loggers) else []


def summary_of(summary: Mapping) -> dict:
    """The ``metrics.json`` entries W&B can show as summary values (no per-epoch history)."""
    out = {}
    for k, v in summary.items():
        if k in ("history", "traceback"):
            continue
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif k == "techniques" and isinstance(v, Mapping):
            out.update({f"techniques/{g}": "+".join(names) or "none" for g, names in v.items()})
    return out


def finish_wandb(loggers: Iterable[Logger], summary: Mapping) -> None:
    """Write the run's summary and close the run, so each job of a sweep is its own W&B run."""
    for lg in wandb_loggers(loggers):
        lg.experiment.summary.update(summary_of(summary))
        lg.experiment.finish(exit_code=0 if summary.get("status", "ok") == "ok" else 1)


def finish_failed(error: str) -> None:
    """Close a W&B run left open by an exception, marked failed, so the next job of a sequential
    sweep starts a run of its own instead of writing into this one."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is not None:
        run.summary.update({"status": "failed", "error": error})
        run.finish(exit_code=1)


class WandbRun(pl.Callback):
    """Logs a few augmented training images once, and closes the run as failed on an exception."""

    def __init__(self, n_images: int = 16):
        self.n_images = n_images
        self.done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done:
            return
        self.done = True
        loggers = wandb_loggers(trainer.loggers)
        if not loggers or not trainer.is_global_zero:
            return
        if isinstance(getattr(pl_module, "members", None), list):
            # A stacked job (reglab.training.stack): the first member's batch, through its hooks.
            pairs = [(m.module, b) for m, b in zip(pl_module.members, batch, strict=True) if b]
            if not pairs:
                return
            pl_module, batch = pairs[0]
        x, y = batch[0][: self.n_images], batch[1][: self.n_images]
        # A private RNG stream: logging images must not change the augmentation draws of the
        # training itself, so a run is the same with and without W&B.
        dev = x.device
        fork = (
            torch.random.fork_rng(devices=[])
            if dev.type == "cpu"
            else torch.random.fork_rng(devices=[dev], device_type=dev.type)
        )
        with fork, torch.no_grad():
            shown = pl_module.prepare(x, train=True) * pl_module.std + pl_module.mean
        pixels = shown.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        images = [p.squeeze(-1).numpy() if p.shape[-1] == 1 else p.numpy() for p in pixels]
        captions = [f"label {int(c)}" for c in (y if y.ndim == 1 else y.argmax(1)).tolist()]
        for lg in loggers:
            lg.log_image(IMAGES_KEY, images, step=trainer.global_step, caption=captions)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            finish_failed(f"{type(exception).__name__}: {exception}")


# ----------------------------------------------------------------------------- sweep report


def report_plots(sweep_dir: Path) -> list[Path]:
    return sorted([*sweep_dir.glob("*.png"), *sweep_dir.glob("plots/*.png")])


def log_report_table(sweep_dir: str | Path, config: Mapping) -> str | None:
    """Log the sweep's ``results.csv`` as a ``wandb.Table`` (and its plots) in a ``report`` run of
    the sweep's group. Does nothing unless the sweep logged to W&B; returns the run's folder."""
    sweep_dir = Path(sweep_dir)
    lg_cfg = next((lg for lg in (config.get("logger") or {}).values() if is_wandb(lg)), None)
    results = sweep_dir / "results.csv"
    if lg_cfg is None or not results.is_file():
        return None
    try:
        return _log_report_run(sweep_dir, results, lg_cfg, config)
    except Exception as e:  # the local report is written already; W&B is an extra
        print(f"reglab: warning: the report was not logged to W&B: {e}", file=sys.stderr)
        return None


def comparison_of(sweep_dir: Path) -> str | None:
    """The comparison a sweep folder holds (its jobs' W&B group), from a run's protocol record."""
    for path in sweep_dir.rglob("seed_*/metrics.json"):
        try:
            return (json.loads(path.read_text()).get("protocol") or {}).get("comparison")
        except (OSError, ValueError):
            continue
    return None


def _log_report_run(sweep_dir: Path, results: Path, lg_cfg: Mapping, config: Mapping) -> str:
    import wandb

    load_env_file()
    if wandb.run is not None:  # a job's run left open in this process must not get the table
        wandb.run.finish()
    reason = offline_reason(lg_cfg)
    if reason:
        tell_offline(reason, f"{sweep_dir}/*/wandb/offline-run-* {sweep_dir}/wandb/offline-run-*")
    table = pd.read_csv(results)
    run = wandb.init(
        project=lg_cfg.get("project") or "reglab",
        entity=lg_cfg.get("entity"),
        group=lg_cfg.get("group") or comparison_of(sweep_dir) or sweep_dir.name,
        name="report",
        job_type="report",
        tags=[str(t)[:64] for t in (config.get("tags") or [])],
        dir=str(sweep_dir),
        mode="offline" if lg_cfg.get("offline") or reason else None,
        config={"sweep_dir": str(sweep_dir), "runs": int(len(table))},
        reinit="finish_previous",
    )
    payload = {REPORT_TABLE_KEY: wandb.Table(dataframe=table)}
    payload.update({f"report/{p.stem}": wandb.Image(str(p)) for p in report_plots(sweep_dir)})
    run.log(payload)
    run_dir = run.dir
    run.finish()
    return str(Path(run_dir).parent)
