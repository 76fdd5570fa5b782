"""Small functions of a composed config that every layer may need."""

from __future__ import annotations

from omegaconf import OmegaConf


def to_plain(node):
    """A DictConfig/ListConfig as plain dicts and lists, resolved (None stays None)."""
    if node is not None and OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def techniques_of(cfg) -> dict[str, list[str]]:
    """The selected options of the two multi-select technique groups."""
    return {
        "regularizer": sorted(cfg.get("regularizer") or {}),
        "augmentation": sorted(cfg.get("augmentation") or {}),
    }


def run_name(cfg) -> str:
    """``dropout+l2+affine``: the regularizers, then the augmentations, or ``baseline``.

    One definition for the run folder (the ``reglab_run_name`` resolver), the W&B run name and
    metrics.json's ``name``, so the three always agree.
    """
    t = techniques_of(cfg)
    return "+".join(t["regularizer"] + t["augmentation"]) or "baseline"
