"""execution.steps_per_execution=k (reglab.training.multistep): same training as k=1."""

import json

import pytest
import torch

from reglab.data import IndexBatches, Split

from ..conftest import FAST, cli, train


def test_index_batches_group_steps_without_changing_them():
    split = Split(torch.randint(0, 256, (70, 1, 4, 4), dtype=torch.uint8), torch.arange(70) % 10)
    single = list(IndexBatches(split, 8, shuffle=True, drop_last=True, seed=1))
    grouped = list(IndexBatches(split, 8, shuffle=True, drop_last=True, seed=1, steps=3))
    assert len(single) == 8 and [len(x) for x, _ in grouped] == [24, 24, 16]
    assert len(IndexBatches(split, 8, shuffle=True, drop_last=True, steps=3)) == 3
    torch.testing.assert_close(
        torch.cat([x for x, _ in grouped]), torch.cat([x for x, _ in single])
    )
    torch.testing.assert_close(
        torch.cat([y for _, y in grouped]), torch.cat([y for _, y in single])
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["scheduler=cosine"],
        ["regularizer=[swa,max_norm]"],
        ["scheduler=onecycle"],
        ["scheduler=step", "scheduler.step_size=1"],
    ],
)
def test_steps_per_execution_trains_exactly_like_one_step_per_batch(tmp_path, extra):
    """Same batches in the same order, one optimizer step each, schedulers (SWA's SWALR too)
    stepped as Lightning steps them, technique after-step hooks after every step."""
    common = ["trainer.max_epochs=3", "callbacks=none", "logger=csv", *extra]
    one = train([*common, "execution.steps_per_execution=1"], tmp_path / "one")
    three = train([*common, "execution.steps_per_execution=3"], tmp_path / "three")
    assert one["global_step"] == three["global_step"] > 0
    for key in ("test/acc", "train/loss", "val/acc", "weights/l2"):
        assert three[key] == pytest.approx(one[key], rel=1e-5), key
    assert [r["train/loss"] for r in three["history"]] == pytest.approx(
        [r["train/loss"] for r in one["history"]], rel=1e-5
    )


@pytest.mark.parametrize(
    "extra, match",
    [
        (["regularizer=[ema]"], "EMAWeightAveraging"),
        (["regularizer=[gradient_clipping]"], "gradient clipping"),
        (["+trainer.accumulate_grad_batches=2"], "accumulation"),
        (["execution.steps_per_execution=0"], "must be an integer >= 1"),
    ],
)
def test_steps_per_execution_refuses_what_needs_every_batch(tmp_path, extra, match):
    from reglab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        train([*FAST, "execution.steps_per_execution=2", *extra], tmp_path)


def test_steps_per_execution_on_the_command_line(tmp_path):
    # Its old key trainer.steps_per_execution is no longer rewritten (moved keys were dropped).
    r = cli("reglab-train", *FAST, "execution.steps_per_execution=4", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    (m,) = tmp_path.glob("runs/*/metrics.json")
    assert json.loads(m.read_text())["status"] == "ok"
