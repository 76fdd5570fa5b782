"""Metrics the LitModule computes: one definition of the test scores for ``trainer.test``,
``reglab-eval`` and ensembles (torchmetrics), the cheap per-epoch sums of training and
validation, and the weight statistics."""

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


class Sums:
    """Loss (times batch size), correct predictions and images seen, summed on the device every
    batch (a few tiny ops, no sync) and read once per epoch: the training and validation
    ``loss``/``acc`` of every epoch. A torchmetrics update per batch cost ~0.25 ms, a compute and
    reset per epoch ~1 ms, most of a small model's step and of a stacked member's epoch end.
    Across DDP ranks the sums are added by the strategy's ``reduce`` (``means``). Plain tensors,
    not buffers: DDP copies rank 0's buffers to every rank before each step."""

    def __init__(self):
        self.loss = self.correct = self.nonfinite = None
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, hard: torch.Tensor) -> None:
        with torch.no_grad():
            if self.loss is None:
                self.reset(loss.device)
            self.loss.add_(loss * len(hard))  # as a stacked job's GroupSums adds it
            self.correct.add_((logits.argmax(1) == hard).sum())
        self.seen += len(hard)

    def reset(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.seen = 0

    def means(self, prefix: str, reduce=None) -> dict[str, torch.Tensor]:
        """``prefix/loss`` and ``prefix/acc`` of what was added since the last reset; ``reduce``
        sums a tensor over the processes (a strategy's ``reduce(t, reduce_op="sum")``)."""
        device = self.loss.device if self.loss is not None else None
        loss = self.loss if self.loss is not None else torch.zeros(())
        correct = self.correct if self.correct is not None else torch.zeros(())
        totals = torch.stack([loss, correct, torch.tensor(float(self.seen), device=device)])
        if reduce is not None:
            totals = reduce(totals)
        loss, correct, seen = totals.unbind()
        return {f"{prefix}/loss": loss / seen, f"{prefix}/acc": correct / seen}


@torch.no_grad()
def weight_stats(model: nn.Module) -> dict[str, float]:
    """L1 norm, L2 norm and sparsity over weight matrices and kernels, as one flat vector: a
    handful of operations and one read, whatever the number of layers (three reads per tensor
    cost ~0.1 ms each on the CPU, and a sync each on a GPU)."""
    weights = [w.detach().flatten() for w in penalized_weights(model)]
    if not weights:
        return {"weights/l1": 0.0, "weights/l2": 0.0, names.SPARSITY: 0.0}
    w = torch.cat(weights) if len(weights) > 1 else weights[0]
    a = w.abs()
    l1, l2sq, small = torch.stack(  # float64: counts stay exact past 2**24 weights
        [a.sum().double(), w.dot(w).double(), (a < names.SPARSITY_THRESHOLD).sum().double()]
    ).tolist()
    return {"weights/l1": l1, "weights/l2": math.sqrt(l2sq), names.SPARSITY: small / w.numel()}
