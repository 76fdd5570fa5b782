"""``reglab-eval``: test one checkpoint, or several and their ensemble (mean of softmax)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torchmetrics.functional.classification import multiclass_calibration_error

from reglab.checkpoint import load_checkpoint
from reglab.config import CONF_DIR, to_plain, with_env
from reglab.data import DataModule, IndexBatches
from reglab.errors import ConfigError, ReglabError
from reglab.module import Classifier
from reglab.train import fail, write_json_atomic


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


@torch.no_grad()
def predict(model: Classifier, loader: IndexBatches, device: torch.device) -> torch.Tensor:
    model.to(device)
    probs = [model(model.prepare(x.to(device), train=False)).softmax(-1).cpu() for x, _ in loader]
    return torch.cat(probs)


def scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "test/acc": (probs.argmax(1) == labels).float().mean().item(),
        "test/loss": F.nll_loss(probs.clamp_min(1e-12).log(), labels).item(),
        "test/ece": multiclass_calibration_error(
            probs, labels, num_classes=probs.shape[1], n_bins=15
        ).item(),
    }


def evaluate(paths: list[str], data_overrides: dict | None = None, trust: bool = False,
             batch_size: int = 1024, device: str = "auto") -> dict:  # fmt: skip
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)  # fmt: skip
    results, all_probs, reference = {}, [], None
    for p in paths:
        ckpt = load_checkpoint(p, trust)
        model = model_from_checkpoint(ckpt, p)
        data_cfg = {**(model.hparams.get("data") or {}), **(data_overrides or {})}
        key = (data_cfg.get("name"), model.hparams["num_classes"])
        if reference is None:
            reference = key
            dm = DataModule(**data_cfg)
            dm.setup("test")
            loader = IndexBatches(dm.test, batch_size, shuffle=False)
        elif key != reference:
            raise ConfigError(
                f"{p} was trained on {key[0]} ({key[1]} classes) but {paths[0]} on {reference[0]} "
                f"({reference[1]} classes): an ensemble needs checkpoints of one dataset"
            )
        probs = predict(model, loader, dev)
        all_probs.append(probs)
        results[str(p)] = scores(probs, dm.test.labels)
    summary = {"members": results}
    if len(paths) > 1:
        summary["ensemble"] = scores(torch.stack(all_probs).mean(0), dm.test.labels)
        summary["best_member"] = max(r["test/acc"] for r in results.values())
    return summary


def print_summary(summary: dict) -> None:
    table = Table(title="reglab-eval: test split")
    for col in ("checkpoint", "test/acc", "test/loss", "test/ece"):
        table.add_column(col, justify="left" if col == "checkpoint" else "right")
    rows = list(summary["members"].items())
    if "ensemble" in summary:
        rows.append((f"ensemble of {len(summary['members'])} (mean softmax)", summary["ensemble"]))
    for name, r in rows:
        table.add_row(name, *(f"{r[k]:.4f}" for k in ("test/acc", "test/loss", "test/ece")))
    Console().print(table)


@with_env
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    paths = cfg.ckpt_path if isinstance(to_plain(cfg.ckpt_path), list) else [cfg.ckpt_path]
    try:
        summary = evaluate([str(p) for p in paths], to_plain(cfg.data), cfg.trust_checkpoint,
                           cfg.batch_size, cfg.device)  # fmt: skip
    except ReglabError as e:
        fail(str(e))
        return
    print_summary(summary)
    out = Path(cfg.paths.output_dir) / "eval_metrics.json"
    write_json_atomic(out, summary)
    print(f"reglab-eval: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
