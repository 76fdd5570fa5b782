"""Metrics the LitModule computes: one definition of the test scores for ``trainer.test``,
``reglab-eval`` and ensembles, the cheap training sums, and the weight statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from reglab.core import names
from reglab.regularizers import penalized_weights


class Scores(nn.Module):
    """Loss, accuracy and (for the test) calibration error of logits against labels.

    ``prefix/loss``, ``prefix/acc``, ``prefix/ece``. Ensembles pass log-probabilities, whose
    cross-entropy is the negative log-likelihood of the averaged probabilities.
    """

    def __init__(self, num_classes: int, prefix: str, calibration: bool = False):
        super().__init__()
        self.prefix = prefix
        self.loss = MeanMetric()
        self.acc = MulticlassAccuracy(num_classes, average="micro")
        self.ece = (
            MulticlassCalibrationError(num_classes, n_bins=15, norm="l1") if calibration else None
        )

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss.update(F.cross_entropy(logits, y), weight=len(y))
        self.acc.update(logits, y)
        if self.ece is not None:
            self.ece.update(logits.softmax(-1), y)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {f"{self.prefix}/loss": self.loss.compute(), f"{self.prefix}/acc": self.acc.compute()}
        if self.ece is not None:
            out[f"{self.prefix}/ece"] = self.ece.compute()
        return out

    @property
    def seen(self) -> bool:
        return bool(self.acc.update_count)

    def reset(self) -> None:
        for m in (self.loss, self.acc, self.ece):
            if m is not None:
                m.reset()


class TrainSums:
    """Training loss and accuracy summed on the device every step (a few tiny ops, no sync) and
    read once per epoch. Updating a torchmetrics object every step costs ~0.25 ms, over 1% of a
    small model's CPU step. Plain tensors, not buffers: DDP copies rank 0's buffers to every rank
    before each step."""

    def __init__(self):
        self.loss = self.correct = self.nonfinite = None
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, hard: torch.Tensor) -> None:
        with torch.no_grad():
            if self.loss is None:
                self.reset(loss.device)
            self.loss.add_(loss, alpha=len(hard))
            self.correct.add_((logits.argmax(1) == hard).sum())
        self.seen += len(hard)

    def reset(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.seen = 0


@torch.no_grad()
def weight_stats(model: nn.Module) -> dict[str, float]:
    """L1 norm, L2 norm and sparsity over weight matrices and kernels."""
    l1 = l2sq = small = count = 0.0
    for w in penalized_weights(model):
        l1 += w.abs().sum().item()
        l2sq += w.pow(2).sum().item()
        small += (w.abs() < names.SPARSITY_THRESHOLD).sum().item()
        count += w.numel()
    return {
        "weights/l1": l1,
        "weights/l2": math.sqrt(l2sq),
        names.SPARSITY: small / max(count, 1),
    }
