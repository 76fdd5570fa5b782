"""``seeds=[...]``: each member of a stacked job is exactly the single run of its seed."""

import csv
import json
import math

import pytest
from omegaconf import OmegaConf

from reglab.core.errors import ConfigError
from reglab.train import run, run_stack

from ..conftest import compose_cfg

# The comparison's regime, shortened: digits, 200 training images, batch 32, 4 epochs. Dropout
# and gaussian noise draw random numbers every step, so any mix-up of the members' random
# states shows; gradient clipping acts per member; early stopping stops members on their own.
TINY = [
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks=none",
    "trainer.max_epochs=4",
    "data=digits",
    "data.train_subset=200",
    "data.val_fraction=0.25",
    "data.batch_size=32",
    "num_threads=1",
]
TECHNIQUES = "regularizer=[dropout,gaussian_noise,gradient_clipping,early_stopping]"
# At this learning rate val/loss turns within 6 epochs: seeds 1, 2, 3 stop after 3, 4, 6.
ES = [
    "regularizer.early_stopping.patience=1",
    "regularizer.gradient_clipping.value=0.5",
    "optimizer.lr=0.03",
    "trainer.max_epochs=6",
]
UNSTABLE = (
    "wall_time_s",
    "stack_size",
    "stack_wall_time_s",
    "stack_member",
    "best_checkpoint",
)


def close(a, b, path="") -> None:
    """Equal, floats within 1e-6, recursively; the path says where they differ."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-6), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, a.keys() ^ b.keys())
        for k in a:
            close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def stable(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in UNSTABLE}


def test_each_member_equals_its_single_run(tmp_path):
    stack = run_stack(compose_cfg([*TINY, TECHNIQUES, *ES, "seeds=[1,2,3]"], tmp_path / "stack"))
    alone = run_stack(compose_cfg([*TINY, TECHNIQUES, *ES, "seeds=[2]"], tmp_path / "alone"))
    single = run(
        compose_cfg([*TINY, TECHNIQUES, *ES, "seed=2", "data.split_seed=2"], tmp_path / "single")
    )
    written = json.loads((tmp_path / "stack" / "seed_2" / "metrics.json").read_text())
    member = stack[1]
    assert member["seed"] == 2 and member["status"] == "ok"
    close(stable(written), stable(json.loads(json.dumps(member))))
    close(stable(member), stable(alone[0]))
    assert single["tested"] == "best epoch" and member["tested"] == "best epoch"
    close(stable(member), stable(single))
    for key in ("test/acc", "val/loss_best", "best_epoch", "val/acc_best", "num_classes"):
        assert key in member, key
    # Early stopping stopped members on their own; the others went on.
    assert member["epochs_trained"] < 6 and len({m["epochs_trained"] for m in stack}) > 1
    # The members are different runs (own split, init, order), not copies of one.
    assert stack[0]["history"][0]["train/loss"] != member["history"][0]["train/loss"]
    # What the Trainer logged each epoch (callback_metrics, read by pruning callbacks): the
    # mean of val/loss over the members validated in that epoch.
    logged = [
        r
        for r in csv.DictReader(open(tmp_path / "stack" / "csv" / "metrics.csv"))
        if r.get("val/loss")
    ]
    assert len(logged) == max(len(m["history"]) for m in stack)
    for epoch, row in enumerate(logged):
        mine = [h["val/loss"] for m in stack for h in m["history"] if h["epoch"] == epoch]
        assert math.isclose(float(row["val/loss"]), sum(mine) / len(mine), rel_tol=1e-6)
    # val/loss_best is the lowest val/loss over the epochs, and its epoch's weights were tested.
    losses = [r["val/loss"] for r in member["history"]]
    assert member["val/loss_best"] == min(losses)
    assert member["best_epoch"] == losses.index(min(losses))


# Techniques that act around a plain MLP's forward: the members share one batched forward
# (reglab.training.vectorize) and must still be their single runs. Mixup and affine draw random
# numbers per batch, label smoothing and L2 change the loss, max-norm the weights after a step.
# Without a penalty the members' weights are slices of shared tensors (vectorize.Shared) until
# early stopping stops one; with L2 they are stacked copies.
REGULARIZERS = "mixup,label_smoothing,max_norm,gradient_clipping,early_stopping"
AROUND = [f"regularizer=[{REGULARIZERS}]", "augmentation=[affine]", *ES]


@pytest.mark.parametrize("penalty", [False, True], ids=["shared", "l2"])
def test_members_sharing_a_batched_forward_equal_their_single_runs(tmp_path, monkeypatch, penalty):
    from reglab.training import stack

    calls = []
    batched = stack.batched_forward
    monkeypatch.setattr(
        stack,
        "batched_forward",
        lambda m, x, shared: calls.append((len(m), shared is not None)) or batched(m, x, shared),
    )
    around = [f"regularizer=[l2,{REGULARIZERS}]", *AROUND[1:]] if penalty else AROUND
    out = run_stack(compose_cfg([*TINY, *around, "seeds=[1,2,3]"], tmp_path / "stack"))
    assert max(calls) == (3, not penalty)  # one forward for the three members
    for seed, member in zip((1, 3), (out[0], out[2]), strict=True):
        single = run(
            compose_cfg(
                [*TINY, *around, f"seed={seed}", f"data.split_seed={seed}"],
                tmp_path / f"single{seed}",
            )
        )
        close(stable(member), stable(single))
    assert len({m["epochs_trained"] for m in out}) > 1  # early stopping stopped them apart


def test_members_stepped_by_one_merged_adamw_equal_their_single_runs(tmp_path, monkeypatch):
    """Decoupled weight decay makes Adam AdamW; one optimizer steps both members' groups."""
    from reglab.training import stack

    merged = []
    merge = stack.merge_optimizers
    monkeypatch.setattr(
        stack, "merge_optimizers", lambda ms: merged.append(merge(ms)) or merged[-1]
    )
    wd = [*TINY, "regularizer=[weight_decay]"]
    out = run_stack(compose_cfg([*wd, "seeds=[1,2]"], tmp_path / "stack"))
    single = run(compose_cfg([*wd, "seed=2", "data.split_seed=2"], tmp_path / "single"))
    assert [type(o).__name__ for o in merged] == ["AdamW"]
    assert len(merged[0].param_groups) == 2  # one per setting: decayed weights, the rest
    close(stable(out[1]), stable(single))


def test_variants_of_one_job_equal_their_single_runs(tmp_path):
    """Trials of a tuning study as one job: each variant sets its own learning rate, epochs and
    penalty; each member is the single run of its values and seed, in its own folder."""
    values = [
        ("a", {"optimizer.lr": 0.01, "trainer.max_epochs": 3, "regularizer.l2.strength": 1e-3}),
        ("b", {"optimizer.lr": 0.002, "trainer.max_epochs": 5, "regularizer.l2.strength": 1e-2}),
    ]
    variants = ",".join(
        "{dir: " + d + ", set: {" + ", ".join(f"{k}: {v}" for k, v in kv.items()) + "}}"
        for d, kv in values
    )
    base = [*TINY, "regularizer=[l2]", "trainer.max_epochs=4"]
    out = run_stack(compose_cfg([*base, "seeds=[1,2]", f"variants=[{variants}]"], tmp_path / "s"))
    assert [m["stack_member"] for m in out] == ["a/seed_1", "a/seed_2", "b/seed_1", "b/seed_2"]
    assert [m["epochs_trained"] for m in out] == [3, 3, 5, 5]  # each stops at its own
    for (d, kv), seed in (((values[0]), 1), ((values[1]), 2)):
        written = json.loads((tmp_path / "s" / d / f"seed_{seed}" / "metrics.json").read_text())
        single = run(
            compose_cfg(
                [
                    *base,
                    *(f"{k}={v}" for k, v in kv.items()),
                    f"seed={seed}",
                    f"data.split_seed={seed}",
                ],
                tmp_path / f"single_{d}",
            )
        )
        close(stable(written), stable(json.loads(json.dumps(single))))


def test_variants_of_different_techniques_equal_their_single_runs(tmp_path):
    """Arms of a comparison as one job: a variant sets its technique groups whole (the nodes
    the option YAMLs compose to), so members with different techniques share one stack; the
    plain MLPs among them (l2, affine, mixup, the baseline) one batched forward, mixup's soft
    targets beside the others' hard ones."""
    arms = {
        "l2": ["regularizer=[l2]", "regularizer.l2.strength=0.01"],
        "affine": ["augmentation=[affine]"],
        "mixup": ["regularizer=[mixup]"],
        "dropout": ["regularizer=[dropout]"],
        "base": [],
    }
    nodes = {a: compose_cfg([*TINY, *o], tmp_path / "c") for a, o in arms.items()}
    variants = [
        {
            "dir": a,
            "set": {g: OmegaConf.to_container(c[g]) for g in ("regularizer", "augmentation")},
        }
        for a, c in nodes.items()
    ]
    (tmp_path / "variants.json").write_text(json.dumps(variants))  # as a comparison passes them
    out = run_stack(
        compose_cfg(
            [*TINY, "seeds=[1,2]", f"variants={tmp_path / 'variants.json'}"], tmp_path / "s"
        )
    )
    assert [m["name"] for m in out[::2]] == ["l2", "affine", "mixup", "dropout", "baseline"]
    for arm in ("l2", "affine", "mixup", "dropout"):
        single = run(
            compose_cfg([*TINY, *arms[arm], "seed=2", "data.split_seed=2"], tmp_path / arm)
        )
        written = json.loads((tmp_path / "s" / arm / "seed_2" / "metrics.json").read_text())
        close(stable(written), stable(json.loads(json.dumps(single))))


@pytest.mark.parametrize(
    "variants, message",
    [
        ("[{dir: a, set: {optimizer.nope: 1}}]", "optimizer.nope is not a key"),
        ("[{dir: a, set: {trainer.precision: 16}}]", "trainer.max_epochs only"),
        ("[{dir: a},{dir: a}]", "share a dir"),
        ("[{dir: ../up}]", "must be {dir: <folder>"),
        ("/no/such/variants.json", "not a readable JSON list"),
    ],
)
def test_bad_variants_are_refused_in_one_line(variants, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_stack(compose_cfg([*TINY, "seeds=[1]", f"variants={variants}"], tmp_path))


def test_ema_members_average_their_own_weights(tmp_path):
    ema = ["regularizer=[ema,dropout]", "regularizer.ema.decay=0.9"]
    stack = run_stack(compose_cfg([*TINY, *ema, "seeds=[1,2]"], tmp_path / "stack"))
    single = run(compose_cfg([*TINY, *ema, "seed=2", "data.split_seed=2"], tmp_path / "single"))
    assert stack[1]["tested"] == single["tested"] == "final weights"
    close(stable(stack[1]), stable(single))


def test_a_tuning_member_never_touches_the_test_set(tmp_path):
    tuning = [*TINY, "++trainer.limit_test_batches=0"]
    stack = run_stack(compose_cfg([*tuning, "seeds=[3]"], tmp_path / "stack"))
    single = run(compose_cfg([*tuning, "seed=3", "data.split_seed=3"], tmp_path / "single"))
    assert not [k for k in stack[0] if k.startswith(("test/", "train_eval/"))]
    close(stable(stack[0]), stable(single))


@pytest.mark.parametrize("technique", ["regularizer=[l2]", "regularizer=[dropout]"])
def test_a_diverging_member_fails_alone(technique, tmp_path, monkeypatch):
    from reglab.training import stack

    # The MLP's members share a batched forward (Member.inputs starts their step); with
    # dropout each steps alone (Member.step).
    for name in ("inputs", "step"):
        original = getattr(stack.Member, name)

        def diverge_seed_2(self, *args, original=original):  # seed 2: NaN at its third step
            if self.seed == 2 and self.steps == 2:
                next(self.module.model.parameters()).data.fill_(float("nan"))
            return original(self, *args)

        monkeypatch.setattr(stack.Member, name, diverge_seed_2)
    out = run_stack(compose_cfg([*TINY, "model=mlp", technique, "seeds=[1,2]"], tmp_path))
    failed = json.loads((tmp_path / "seed_2" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "loss became nan at step 3" in failed["error"]
    assert out[0]["status"] == "ok" and out[0]["epochs_trained"] == 4


def test_what_cannot_be_stacked_runs_seed_by_seed(tmp_path, capsys):
    out = run_stack(compose_cfg([*TINY, "regularizer=[swa]", "seeds=[1,2]"], tmp_path))
    assert "regularizer=swa" in capsys.readouterr().out
    single = run(
        compose_cfg(
            [*TINY, "regularizer=[swa]", "seed=2", "data.split_seed=2"], tmp_path / "single"
        )
    )
    written = json.loads((tmp_path / "seed_2" / "metrics.json").read_text())
    assert written["tested"] == "final weights" and "stack_size" not in written
    close(stable(written), stable(json.loads(json.dumps(single))))
    assert out[0]["seed"] == 1 and out[0]["status"] == "ok"


@pytest.mark.parametrize("seeds", ["[]", "[1,1]", "[-1]", "[1.5]"])
def test_bad_seeds_are_refused_in_one_line(seeds, tmp_path):
    with pytest.raises(ConfigError, match=r"^seeds="):
        run_stack(compose_cfg([*TINY, f"seeds={seeds}"], tmp_path))
