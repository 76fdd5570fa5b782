"""An ensemble of trained Classifiers: the mean of their softmax, scored by the same ``Scores``
and the same ``predict_logits`` (TTA included) as a single model's ``trainer.test``."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from reglab.training.metrics import Scores
from reglab.training.module import Classifier


class Ensemble(pl.LightningModule):
    def __init__(self, members: list[Classifier]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.test_scores = Scores(members[0].hparams.num_classes, "test", calibration=True)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mean probabilities: their cross-entropy is the ensemble's NLL."""
        probs = torch.stack([m.predict_logits(x).softmax(-1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()

    def test_step(self, batch, batch_idx):
        self.test_scores.update(self.predict_logits(batch[0]), batch[1])

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_scores.compute())
        self.test_scores.reset()
