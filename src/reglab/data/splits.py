"""Which examples train and which validate: a stratified holdout or k folds, and balanced subsets.

Both are functions of ``data.split_seed`` alone, so every technique and every run seed of a
comparison sees the same split unless the split seed itself changes.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from reglab.core.errors import ConfigError


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` examples with classes as equal as possible (remainder to the first)."""
    g = torch.Generator().manual_seed(seed)
    per_class = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    chosen = []
    for c, k in enumerate(per_class):
        idx = (labels == c).nonzero().flatten()
        if k > len(idx):
            raise ConfigError(
                f"data.train_subset={n} needs {k} examples of class {c} but only {len(idx)} exist; "
                "use a smaller train_subset"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def split_indices(
    labels: torch.Tensor,
    val_fraction: float,
    seed: int,
    num_folds: int | None = None,
    fold: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train, val) indices: a seeded holdout, or fold ``fold`` of ``num_folds``."""
    y = labels.numpy()
    all_idx = np.arange(len(y))
    try:
        if num_folds:
            skf = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
            tr, va = list(skf.split(all_idx, y))[fold]
        else:
            tr, va = train_test_split(
                all_idx, test_size=val_fraction, stratify=y, random_state=seed
            )
    except ValueError as e:  # too few examples per class for a stratified split
        knob = f"data.num_folds={num_folds}" if num_folds else f"data.val_fraction={val_fraction}"
        raise ConfigError(f"{knob} cannot split {len(y)} examples by class: {e}") from e
    return torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
