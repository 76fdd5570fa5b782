"""Metric names that more than one module reads. The LitModule logs them; metrics.json takes
every logged scalar as it is, so a new metric needs no list to be updated."""

from __future__ import annotations

TEST_ACC = "test/acc"
TEST_LOSS = "test/loss"
TEST_ECE = "test/ece"
VAL_ACC = "val/acc"
VAL_ACC_BEST = "val/acc_best"
GAP_ACC = "gap/acc"  # train accuracy in eval mode minus test accuracy
SPARSITY = "weights/sparsity"  # fraction of weight-matrix entries with |w| < SPARSITY_THRESHOLD
SPARSITY_THRESHOLD = 1e-3
