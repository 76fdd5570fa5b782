"""Checkpoints inside an epoch, and a resume from one that ends as if the run never stopped.

The loader's position, the random states, the epoch's running training sums and the max-norm
projection of the last step all have to come back; the kill test fails if any one of them does
not (each was seen to change metrics.json on its own when left out).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reglab.core.paths import ROOT_DIR
from reglab.data import IndexBatches, Split

from ..conftest import cli, kill_when, popen_train, train

UNSTABLE = ("wall_time_s", "best_checkpoint")  # a clock and a path; everything else must match


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in UNSTABLE}


def test_loader_state_resumes_the_epoch_where_it_stopped():
    split = Split(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    loader = IndexBatches(split, 8, shuffle=True, drop_last=True, seed=4)
    loader.set_epoch(3)
    whole = [y.tolist() for _, y in loader]

    loader.set_epoch(3)
    it = iter(loader)
    done = [next(it)[1].tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 3, "served": 2}

    fresh = IndexBatches(split, 8, shuffle=True, drop_last=True, seed=4)
    fresh.load_state_dict(state)
    fresh.set_epoch(3)  # Lightning sets the epoch again before the resumed epoch
    rest = [y.tolist() for _, y in fresh]
    assert done + rest == whole and len(rest) == len(whole) - 2
    # The skip belongs to that epoch only: the next one is whole again.
    fresh.set_epoch(4)
    assert len(list(fresh)) == len(whole)


def _ckpt_steps(folder: Path) -> list[int]:
    return sorted(torch.load(p, weights_only=True)["global_step"] for p in folder.glob("*.ckpt"))


@pytest.mark.parametrize(
    "trigger",
    [
        [
            "callbacks.mid_epoch_checkpoint.every_n_train_steps=3",
            "callbacks.mid_epoch_checkpoint.train_time_interval=null",
        ],
        [
            "callbacks.mid_epoch_checkpoint.train_time_interval.minutes=0",
            "+callbacks.mid_epoch_checkpoint.train_time_interval.microseconds=1",
        ],
    ],
    ids=["steps", "time"],
)
def test_mid_epoch_checkpoints_skip_the_last_batch_of_each_epoch(trigger, tmp_path):
    # digits at batch 128: 9 steps per epoch. Every kept file shows when it was written.
    s = train(
        [
            "trainer.max_epochs=2",
            "callbacks=model_checkpoint",
            "logger=csv",
            "callbacks.mid_epoch_checkpoint.save_top_k=-1",
            "+callbacks.mid_epoch_checkpoint.filename='step_{step:03d}'",
            *trigger,
        ],
        tmp_path,
    )
    assert s["global_step"] == 18
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 18)  # the epoch-end save, not a later one
    steps = _ckpt_steps(tmp_path / "checkpoints")
    mid = [st for st in steps if st % 9]
    assert mid and all(st not in mid for st in (9, 18))
    if "steps" in trigger[0]:
        assert mid == [3, 6, 12, 15]
    else:  # every batch but the last of each epoch: 1-8 and 10-17
        assert mid == [*range(1, 9), *range(10, 18)]


# 37 steps per epoch on digits at batch 32; a mid-epoch last.ckpt every 10 steps. Dropout,
# max-norm that binds, and a cosine schedule (which makes Lightning build the loader early).
KILL_ARGS = [
    "trainer.max_epochs=3",
    "data.batch_size=32",
    "regularizer=[dropout,max_norm]",
    "regularizer.max_norm.c=0.5",
    "scheduler=cosine",
    "seed=5",
    "callbacks=model_checkpoint",
    "logger=csv",
    "num_threads=1",
    "callbacks.mid_epoch_checkpoint.train_time_interval=null",
    "callbacks.mid_epoch_checkpoint.every_n_train_steps=10",
]


@pytest.mark.slow
def test_sigkill_inside_an_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = train(KILL_ARGS, tmp_path / "reference")

    logs, marker = tmp_path / "logs", tmp_path / "paused"
    args = [
        *KILL_ARGS,
        f"paths.log_dir={logs}",
        "+callbacks.pause._target_=tests.training.pause.PauseAt",
        "+callbacks.pause.step=45",
        f"+callbacks.pause.marker={marker}",
    ]
    kill_when(popen_train(*args), marker.exists, "the run did not reach step 45")

    (run_dir,) = logs.glob("runs/*")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 40 and last["epoch"] == 1  # 3 batches into the second epoch
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "served": 3}]
    assert not (run_dir / "metrics.json").exists()

    r = cli("reglab-train", *args, "resume=true", env={"PYTHONPATH": str(ROOT_DIR)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"continuing {run_dir}" in r.stderr
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["global_step"] == reference["global_step"] == 111
    assert stable(resumed) == stable(json.loads(json.dumps(reference)))
