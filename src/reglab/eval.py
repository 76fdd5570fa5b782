"""``reglab-eval``: test one checkpoint, or several and their ensemble (mean of softmax).

Each checkpoint is tested by ``trainer.test`` on the Classifier it describes, the same code that
tested it at the end of training (test-time augmentation included); an ensemble is an
``Ensemble`` module scored by the same metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from reglab.cli import entry_point
from reglab.core.config import to_plain
from reglab.core.errors import ConfigError, ReglabError, fail
from reglab.core.io import write_json_atomic
from reglab.core.names import TEST_ACC, TEST_ECE, TEST_LOSS
from reglab.core.paths import CONF_SOURCE
from reglab.data import DataModule, IndexBatches
from reglab.training.assemble import quiet_lightning
from reglab.training.checkpoint import load_checkpoint
from reglab.training.ensemble import Ensemble
from reglab.training.module import Classifier

SCORES = (TEST_ACC, TEST_LOSS, TEST_ECE)


def model_from_checkpoint(ckpt: dict, path: str | Path) -> Classifier:
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{path} is not a reglab checkpoint (no hyper_parameters/state_dict)")
    model = Classifier(**hp)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ConfigError(f"{path} does not match the model it describes: {e}") from e
    return model.eval()


def tester(device: str) -> pl.Trainer:
    quiet_lightning()
    accelerator = {"auto": "auto", "cpu": "cpu"}.get(device, "gpu")
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test(trainer: pl.Trainer, module: pl.LightningModule, loader) -> dict[str, float]:
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    return {k: float(results[k]) for k in SCORES}


def evaluate(
    paths: list[str],
    data_overrides: dict | None = None,
    trust: bool = False,
    batch_size: int = 1024,
    device: str = "auto",
) -> dict:
    members = [model_from_checkpoint(load_checkpoint(p, trust), p) for p in paths]
    keys = [((m.hparams.get("data") or {}).get("name"), m.hparams["num_classes"]) for m in members]
    for p, key in zip(paths[1:], keys[1:], strict=True):
        if key != keys[0]:
            raise ConfigError(
                f"{p} was trained on {key[0]} ({key[1]} classes) but {paths[0]} on {keys[0][0]} "
                f"({keys[0][1]} classes): an ensemble needs checkpoints of one dataset"
            )
    dm = DataModule(**{**(members[0].hparams.get("data") or {}), **(data_overrides or {})})
    dm.setup("test")
    loader = IndexBatches(dm.test, batch_size, shuffle=False)
    trainer = tester(device)
    summary = {
        "members": {str(p): test(trainer, m, loader) for p, m in zip(paths, members, strict=True)}
    }
    if len(paths) > 1:
        summary["ensemble"] = test(trainer, Ensemble(members), loader)
        summary["best_member"] = max(r[TEST_ACC] for r in summary["members"].values())
    return summary


def print_summary(summary: dict) -> None:
    table = Table(title="reglab-eval: test split")
    for col in ("checkpoint", *SCORES):
        table.add_column(col, justify="left" if col == "checkpoint" else "right")
    rows = list(summary["members"].items())
    if "ensemble" in summary:
        rows.append((f"ensemble of {len(summary['members'])} (mean softmax)", summary["ensemble"]))
    for name, r in rows:
        table.add_row(name, *(f"{r[k]:.4f}" for k in SCORES))
    Console().print(table)


@hydra.main(version_base="1.3", config_path=CONF_SOURCE, config_name="eval")
def _main(cfg: DictConfig) -> None:
    paths = cfg.ckpt_path if isinstance(to_plain(cfg.ckpt_path), list) else [cfg.ckpt_path]
    try:
        summary = evaluate(
            [str(p) for p in paths],
            to_plain(cfg.data),
            cfg.trust_checkpoint,
            cfg.batch_size,
            cfg.device,
        )
    except ReglabError as e:
        fail(str(e))
        return
    print_summary(summary)
    out = Path(cfg.paths.output_dir) / "eval_metrics.json"
    write_json_atomic(out, summary)
    print(f"reglab-eval: wrote {out}", file=sys.stderr)


main = entry_point(_main, "eval")

if __name__ == "__main__":
    main()
