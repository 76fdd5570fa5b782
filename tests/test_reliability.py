"""Reliability: resume after SIGKILL, determinism, bad input refused before training, safe loading.

Bad inputs are tried through ``reglab-train`` (exit code and the one ``reglab: error:`` line) for
a few, and in-process for the rest, with ``Trainer.fit`` patched to fail the test if reached.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from reglab.cli import check_group_choices, previous_run, resume_argv, runs_root_of
from reglab.core.errors import ConfigError, DataError
from reglab.core.paths import ROOT_DIR
from reglab.training.assemble import FIT_METRICS
from reglab.training.checkpoint import SafeCheckpointIO, load_checkpoint
from reglab.training.loggers import load_env_file

from .conftest import (
    FAST,
    cli,
    kill_when,
    popen_train,
    train,
    write_cifar_dataset,
    write_idx_dataset,
)

UNSTABLE = ("wall_time_s", "best_checkpoint")  # a clock and a path; everything else must match


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in UNSTABLE}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reglab: error:")]


def assert_one_line_error(r: subprocess.CompletedProcess, *parts: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    (line,) = error_lines(r.stderr)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    for part in parts:
        assert part in line, (part, line)
    return line


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if training starts: bad input must be refused before ``Trainer.fit``."""

    def fit(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(pl.Trainer, "fit", fit)


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_mlp")
    train(["trainer.max_epochs=1", "callbacks=model_checkpoint", "logger=csv"], out)
    return out / "checkpoints" / "last.ckpt"


# ----------------------------------------------------------------------------- bad input


BAD = [
    (
        ["regularizer=dropout", "regularizer.dropout.input_p=-0.1"],
        "regularizer.dropout.input_p=-0.1 must be a number in [0, 1)",
    ),
    (
        ["regularizer=activation_noise", "regularizer.activation_noise.std=-1"],
        "regularizer.activation_noise.std=-1 must be a number >= 0",
    ),
    (["regularizer=dropout", "regularizer.dropout.p=1.2"], "regularizer.dropout.p=1.2"),
    (
        ["regularizer=gaussian_noise", "regularizer.gaussian_noise.std=-1"],
        "regularizer.gaussian_noise.std=-1",
    ),
    (["regularizer=l2", "regularizer.l2.strength=-1"], "regularizer.l2.strength=-1"),
    (["regularizer=l1", "regularizer.l1.strength=-0.5"], "regularizer.l1.strength=-0.5"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a number > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a number > 0"),
    (
        ["regularizer=weight_decay", "regularizer.weight_decay.strength=-0.01"],
        "regularizer.weight_decay.strength=-0.01 must be a number >= 0",
    ),
    (["data.train_subset=5"], "data.train_subset=5 is smaller than the 10 classes"),
    (["data.train_subset=100000"], "data.train_subset=100000 is larger than the 1212"),
    (["data.num_folds=5", "data.fold=5"], "data.fold=5 must be an integer in [0, 4]"),
    (["data.num_folds=3", "data.fold=-1"], "data.fold=-1"),
    (["data.val_fraction=0"], "data.val_fraction=0 must be a number in (0, 1)"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 must be a number in (0, 1)"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer > 0"),
    (["data.batch_size=-8"], "data.batch_size=-8 must be an integer > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer > 0"),
    (["trainer.max_epochs=-3"], "trainer.max_epochs=-3 must be an integer > 0"),
    (
        ["regularizer=stochastic_depth"],
        "regularizer=stochastic_depth: model mlp has no residual blocks",
    ),
    (
        ["model=cnn", "regularizer=stochastic_depth"],
        "regularizer=stochastic_depth: model cnn has no residual blocks",
    ),
    (
        ["model=torchvision_resnet18", "regularizer=batch_norm"],
        "regularizer=batch_norm: model torchvision_resnet18 has no hidden Linear/Conv layer",
    ),
    (["data.batch_size=abc"], "data.batch_size='abc' must be an integer"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' must be a number"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs='ten' must be an integer > 0"),
    (["seed=1.5"], "seed=1.5 must be an integer"),
    (["ckpt_path=/no/such/file.ckpt"], "ckpt_path=/no/such/file.ckpt: no such file"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 must be an integer > 0"),
    # Batch norm's training statistics need two examples; Lightning's traceback named neither.
    (["model=resnet18", "data.batch_size=1"], "data.batch_size=1: model=resnet18 has batch norm"),
    (
        ["regularizer=batch_norm", "data.batch_size=1"],
        "data.batch_size=1: model=mlp has batch norm",
    ),
    # Techniques that cannot act at these settings: SWA would test untrained weights.
    (
        ["regularizer=[swa]", "trainer.max_epochs=1"],
        "regularizer=[swa] with trainer.max_epochs=1 would test the untrained initial weights",
    ),
    (
        ["regularizer=[swa]", "trainer.max_epochs=4", "regularizer.swa.epoch_start=1"],
        "regularizer.swa.epoch_start=1 makes SWA average the untrained initial weights in",
    ),
    (
        ["regularizer=[swa]", "trainer.max_epochs=3", "regularizer.swa.epoch_start=5"],
        "regularizer.swa.epoch_start=5 is past the last epoch of trainer.max_epochs=3",
    ),
    (
        ["regularizer=[swa]", "trainer.max_epochs=-1", "+trainer.max_steps=50"],
        "regularizer.swa.epoch_start=0.8 is a fraction of trainer.max_epochs",
    ),
    # A monitor no metric answers: Lightning stopped with a traceback after the first epoch.
    (
        ["regularizer=early_stopping", "regularizer.early_stopping.monitor=val/accuracy"],
        "regularizer.early_stopping.monitor=val/accuracy is not a metric a run logs",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_refused_before_training(overrides, message, tmp_path, no_fit):
    with pytest.raises(ConfigError) as e:
        train(["trainer.max_epochs=2", "callbacks=none", "logger=csv", *overrides], tmp_path)
    text = str(e.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["callbacks.model_checkpoint.monitor=val/accuracy"],
            "callbacks.model_checkpoint.monitor=val/accuracy is not a metric a run logs; choose from",
        ),
        (
            ["callbacks.mid_epoch_checkpoint.every_n_train_steps=10"],
            "callbacks.mid_epoch_checkpoint: every_n_train_steps=10 and train_time_interval=0:05:00 "
            "are both set",
        ),
        (["callbacks.model_checkpoint.mode=maximum"], "callbacks.model_checkpoint: "),
        (
            [
                "+callbacks.early_stopping._target_=pytorch_lightning.callbacks.EarlyStopping",
                "+callbacks.early_stopping.monitor=train/accuracy",
            ],
            "callbacks.early_stopping.monitor=train/accuracy is not a metric",
        ),
    ],
)
def test_bad_callback_settings_name_the_key(overrides, message, tmp_path, no_fit):
    with pytest.raises(ConfigError) as e:
        train(
            ["trainer.max_epochs=2", "callbacks=model_checkpoint", "logger=csv", *overrides],
            tmp_path,
        )
    text = str(e.value)
    assert message in text and "\n" not in text, text


def test_metrics_a_callback_may_monitor_are_the_ones_a_run_logs(digits_ckpt):
    # If the Classifier logs a new metric while fitting, FIT_METRICS must name it, or a valid
    # monitor would be refused; if it stops logging one, a monitor would fail after an epoch.
    history = torch.load(digits_ckpt, weights_only=True)["history"]
    assert set(FIT_METRICS) == set(history[0]) - {"epoch"}


@pytest.mark.parametrize(
    "probe,message",
    [
        (
            ["model=resnet18", "data.batch_size=1"],
            "data.batch_size=1: model=resnet18 has batch norm",
        ),
        (["data.eval_batch_size=0"], "data.eval_batch_size=0 must be an integer > 0"),
        (
            ["regularizer=[swa]", "trainer.max_epochs=1"],
            "regularizer=[swa] with trainer.max_epochs=1",
        ),
    ],
)
def test_cli_probes_of_the_issue_are_one_line(probe, message, tmp_path):
    """The bad inputs found by trying reglab as a new user: one line and exit 2, no traceback."""
    r = cli("reglab-train", *probe, f"paths.log_dir={tmp_path}")
    assert_one_line_error(r, message)


def _trainer_warnings(overrides: list[str], tmp_path: Path, capsys) -> list[str]:
    """The ``reglab: warning:`` lines of building a run's Trainer (nothing is trained)."""
    from reglab.training.assemble import build, build_trainer

    from .conftest import compose_cfg

    cfg = compose_cfg(["logger=csv", *overrides], tmp_path)
    capsys.readouterr()
    build_trainer(cfg, *build(cfg))
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("reglab: warning:")]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            [
                "regularizer=early_stopping",
                "regularizer.early_stopping.patience=5",
                "trainer.max_epochs=5",
            ],
            "regularizer.early_stopping.patience=5 with trainer.max_epochs=5: early stopping cannot "
            "end the run early",
        ),
        (
            [
                "regularizer=early_stopping",
                "regularizer.early_stopping.patience=2",
                "trainer.max_epochs=6",
                "trainer.check_val_every_n_epoch=2",
            ],
            "regularizer.early_stopping.patience=2 with trainer.max_epochs=6",
        ),
        (
            ["regularizer=[swa,early_stopping]", "trainer.max_epochs=10"],
            "regularizer.swa with regularizer.early_stopping: if early stopping ends the run",
        ),
        (
            [
                "regularizer=early_stopping",
                "regularizer.early_stopping.patience=2",
                "trainer.max_epochs=4",
            ],
            None,
        ),
        (["regularizer=[swa]", "trainer.max_epochs=3"], None),
    ],
    ids=["patience>=epochs", "val-every-2", "swa+early_stopping", "fine", "swa-fine"],
)
def test_techniques_that_cannot_act_warn_in_one_line(overrides, expected, tmp_path, capsys):
    lines = _trainer_warnings(["callbacks=none", *overrides], tmp_path, capsys)
    if expected is None:
        assert lines == []
    else:
        (line,) = lines
        assert expected in line, line


def test_cli_bad_value_is_one_line_and_exit_2(tmp_path):
    bad = ["regularizer=dropout", "regularizer.dropout.p=1.5"]
    r = cli("reglab-train", *bad, f"paths.log_dir={tmp_path}")
    assert_one_line_error(r, "regularizer.dropout.p=1.5", "[0, 1)")
    (saved,) = tmp_path.glob("runs/*/metrics.json")
    record = json.loads(saved.read_text())
    assert record["status"] == "failed" and "regularizer.dropout.p=1.5" in record["error"]
    assert not list(tmp_path.glob("runs/*/checkpoints/*.ckpt"))


def test_cli_unknown_technique_in_a_list_is_one_line(tmp_path):
    # Hydra's own message for a bad entry of a multi-select list does not list the options.
    r = cli("reglab-train", "regularizer=[l2,dropuot]", f"paths.log_dir={tmp_path}")
    assert_one_line_error(r, "regularizer=dropuot is not an option", "'dropout'", "'l2'")
    assert not list(tmp_path.glob("runs/*"))  # refused before Hydra made a run folder


@pytest.mark.parametrize(
    "override,message",
    [
        ("data=mnist_typo", "data=mnist_typo is not an option; choose from ['cifar10', "),
        ("model=vit", "model=vit is not an option; choose from ["),
        ("augmentation=[nosuch]", "augmentation=nosuch is not an option"),
        ("+experiment=nosuch", "experiment=nosuch is not an option"),
    ],
)
def test_unknown_dataset_model_or_technique_names_the_options(override, message):
    with pytest.raises(ConfigError) as e:
        check_group_choices(["seed=1", override])
    assert message in str(e.value)
    check_group_choices(["data=digits", "model=cnn", "regularizer=[l2,dropout]", "seed=1"])
    check_group_choices(["regularizer=l1,l2", "data=glob(*)"])  # sweeps: fine or Hydra's job


def test_model_config_without_target(tmp_path, no_fit):
    with pytest.raises(ConfigError, match=r"model \(name='vit'\) has no _target_: name its"):
        train([*FAST, "~model._target_", "model.name=vit"], tmp_path)


def test_cli_truncated_dataset_file_is_named(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data / "MNIST" / "raw", n_train=100, n_test=50)
    bad = data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    r = cli(
        "reglab-train",
        "data=mnist",
        f"paths.data_dir={data}",
        "data.download=false",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert_one_line_error(r, str(bad), "delete it")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_cifar_file_is_named(damage, tmp_path, no_fit):
    write_cifar_dataset(tmp_path, hundred=False, n_per_file=20)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not a pickle" * 10)
    with pytest.raises(DataError, match=r"data_batch_3.*delete it"):
        train([*FAST, "data=cifar10"], tmp_path / "out", data_dir=tmp_path)


def test_checkpoint_of_another_model_is_refused(digits_ckpt, tmp_path):
    r = cli("reglab-train", "model=cnn", f"ckpt_path={digits_ckpt}", f"paths.log_dir={tmp_path}")
    assert_one_line_error(r, "was saved by model=mlp on data=digits", "this run is model=cnn")


def test_checkpoint_of_another_dataset_is_refused(digits_ckpt, fake_data_dir, tmp_path, no_fit):
    with pytest.raises(ConfigError, match=r"saved by model=mlp on data=digits .* data=mnist"):
        train([*FAST, "data=mnist", f"ckpt_path={digits_ckpt}"], tmp_path, fake_data_dir)


def test_checkpoint_of_another_network_shape_is_refused(digits_ckpt, tmp_path, no_fit):
    with pytest.raises(ConfigError, match=r"does not fit this run's network"):
        train([*FAST, "model.widths=[32]", f"ckpt_path={digits_ckpt}"], tmp_path)


def test_divergence_stops_at_once_and_is_recorded(tmp_path):
    r = cli(
        "reglab-train",
        "optimizer=sgd",
        "optimizer.lr=1e10",
        "trainer.max_epochs=5",
        "callbacks=none",
        f"paths.log_dir={tmp_path}",
    )
    line = assert_one_line_error(r, "loss became", "lower optimizer.lr")
    (saved,) = tmp_path.glob("runs/*/metrics.json")
    record = json.loads(saved.read_text())
    assert record["status"] == "failed" and "loss became" in record["error"]
    step = record["global_step"]
    assert f"at step {step} " in line
    assert 0 < step < 9  # digits has 9 steps per epoch: it stopped inside the first one


# ----------------------------------------------------------------------------- safe loading


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that loading would have run code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_copy(good: Path, bad: Path, marker: Path) -> None:
    ckpt = torch.load(good, weights_only=True)
    ckpt["evil"] = _Payload(marker)
    bad.parent.mkdir(parents=True, exist_ok=True)
    with open(bad, "wb") as f:
        torch.save(ckpt, f, pickle_protocol=pickle.HIGHEST_PROTOCOL)


def test_train_refuses_pickled_objects_in_ckpt_path(digits_ckpt, tmp_path):
    marker, bad = tmp_path / "code_ran", tmp_path / "bad.ckpt"
    _malicious_copy(digits_ckpt, bad, marker)
    r = cli("reglab-train", f"ckpt_path={bad}", f"paths.log_dir={tmp_path / 'logs'}")
    assert_one_line_error(r, str(bad), "trust_checkpoint=true")
    assert not marker.exists()


def test_resume_refuses_pickled_objects_in_last_ckpt(digits_ckpt, tmp_path, no_fit):
    marker = tmp_path / "code_ran"
    _malicious_copy(digits_ckpt, tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(ConfigError, match="trust_checkpoint=true"):
        train(["callbacks=default", "logger=csv", "resume=true"], tmp_path / "run")
    assert not marker.exists()
    load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", trust=True)
    assert marker.exists()  # the flag really is what stands between the file and its code


def test_truncated_checkpoint_is_refused_in_one_line(digits_ckpt, tmp_path, no_fit):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(digits_ckpt.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        train([*FAST, f"ckpt_path={bad}"], tmp_path / "out")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(20)  # a partial file on disk, as a kill mid-write leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


# ----------------------------------------------------------------------------- determinism


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    args = [
        "trainer.max_epochs=2",
        "callbacks=default",
        "logger=csv",
        "regularizer=dropout",
        "scheduler=cosine",
    ]
    first = train([*args, "seed=7"], tmp_path / "a")
    second = train([*args, "seed=7"], tmp_path / "b")
    other = train([*args, "seed=8"], tmp_path / "c")
    saved = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in "abc"]
    assert stable(saved[0]) == stable(saved[1])
    assert stable(first) == stable(second) and first["test/acc"] > 0.5
    assert saved[2]["history"] != saved[0]["history"]  # the seed matters, so the check can fail
    assert other["seed"] == 8


# ----------------------------------------------------------------------------- resume


def test_previous_run_is_the_newest_with_the_same_overrides(tmp_path):
    def make(name: str, overrides: list[str], age: float) -> Path:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        t = time.time() - age
        os.utime(folder / ".hydra" / "overrides.yaml", (t, t))
        return folder

    make("old", ["seed=1", "model=cnn"], age=100)
    newest = make("new", ["model=cnn", "seed=1", "resume=true"], age=10)
    make("other", ["seed=2", "model=cnn"], age=1)
    assert previous_run(["seed=1", "model=cnn", "resume=true"], tmp_path) == newest
    assert previous_run(["seed=1", "model=cnn"], tmp_path) == newest
    assert previous_run(["seed=3"], tmp_path) is None
    assert resume_argv(["seed=1"]) == ["seed=1"]  # no resume=true: untouched
    assert resume_argv(["-m", "seed=1,2", "resume=true"])[-1] == "resume=true"


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    # Dropout and a cosine schedule: equal results need the RNG and scheduler states restored,
    # not only the weights; the batch order follows (seed, epoch).
    args = [
        "trainer.max_epochs=4",
        "data.batch_size=64",
        "regularizer=dropout",
        "seed=3",
        "scheduler=cosine",
        "callbacks=model_checkpoint",
        "logger=csv",
    ]
    reference = train(args, tmp_path / "reference")

    logs = tmp_path / "logs"
    proc = popen_train(*args, f"paths.log_dir={logs}")
    kill_when(proc, lambda: list(logs.glob("runs/*/checkpoints/last.ckpt")), "no checkpoint")
    (run_dir,) = logs.glob("runs/*")
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at < 3 and not (run_dir / "metrics.json").exists()  # it really was cut short

    r = cli("reglab-train", *args, f"paths.log_dir={logs}", "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"continuing {run_dir}" in r.stderr
    assert [p.name for p in logs.glob("runs/*")] == [run_dir.name]  # the same folder, reused
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs_trained"] == 4 and len(resumed["history"]) == 4
    assert stable(resumed) == stable(json.loads(json.dumps(reference)))


# ----------------------------------------------------------------------------- no lost runs


def test_new_dir_gives_each_of_many_processes_a_folder_of_its_own(tmp_path):
    base = str(tmp_path / "runs" / "2026-01-01_00-00-00_baseline")
    claim = f"from reglab.core.io import make_new_dir; print(make_new_dir({base!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", claim], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    got = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert got == sorted([base, f"{base}_2", f"{base}_3", f"{base}_4"])
    made = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert made == sorted(Path(g).name for g in got)


def test_run_and_sweep_folders_are_made_once_per_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reglab.core.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    first, again = str(cfg.hydra.run.dir), str(cfg.hydra.run.dir)
    assert first == again and Path(first).is_dir()  # resolved twice, made once
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [Path(first).name]
    sweep = str(cfg.hydra.sweep.dir)
    assert sweep == str(cfg.hydra.sweep.dir) and Path(sweep).parent == tmp_path / "sweeps"
    # resume=true composes the command only to find the runs folder: it makes none.
    assert runs_root_of([f"paths.log_dir={tmp_path / 'other'}"]) == tmp_path / "other" / "runs"
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_two_runs_started_together_both_finish_in_folders_of_their_own(tmp_path):
    # Started in the same second, the two once got one folder: a CSV-logger traceback and a
    # single metrics.json were left. The default folder name holds the second; here both ask
    # for one name outright, so they always collide (the default goes through the same
    # reglab_new_dir: test_run_and_sweep_folders_are_made_once_per_config).
    name = "${reglab_new_dir:${paths.log_dir}/runs/same_second_baseline}"
    procs = [
        popen_train(
            "trainer.max_epochs=3",
            f"seed={seed}",
            "callbacks=model_checkpoint",
            "logger=csv",
            "num_threads=1",
            f"paths.log_dir={tmp_path}",
            f"hydra.run.dir='{name}'",
        )
        for seed in (1, 2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["same_second_baseline", "same_second_baseline_2"]
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert sorted(m["seed"] for m in metrics) == [1, 2]
    for run, m in zip(runs, metrics, strict=True):
        assert m["status"] == "ok" and m["epochs_trained"] == 3
        assert Path(m["best_checkpoint"]).parent == run / "checkpoints"
        seed = OmegaConf.load(run / ".hydra" / "config.yaml").seed
        assert seed == m["seed"]  # each folder holds one run's files only


# ----------------------------------------------------------------------------- secrets


def test_dotenv_is_loaded_without_overriding_the_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("REGLAB_TEST_FROM_DOTENV=yes\nREGLAB_TEST_SET=dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGLAB_TEST_FROM_DOTENV", raising=False)
    monkeypatch.setenv("REGLAB_TEST_SET", "environment")
    load_env_file()
    assert os.environ["REGLAB_TEST_FROM_DOTENV"] == "yes"
    assert os.environ["REGLAB_TEST_SET"] == "environment"
    monkeypatch.delenv("REGLAB_TEST_FROM_DOTENV")


def test_env_file_is_git_ignored():
    assert ".env" in (ROOT_DIR / ".gitignore").read_text().split()


@pytest.mark.slow
def test_api_key_never_reaches_the_run_folder(tmp_path, monkeypatch):
    key = "a1b2c3d4e5f6reglabfakekey0123456789abcdef"  # 40 characters, like a real W&B key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / ".env").write_text(f"WANDB_API_KEY={key}\nWANDB_NOTES=dotenv-was-read\n")
    logs = tmp_path / "logs"
    r = cli(
        "reglab-train",
        "logger=wandb",
        "trainer.max_epochs=1",
        "callbacks=default",
        f"paths.log_dir={logs}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.json" for p in files) and any(".hydra" in p.parts for p in files)
    assert any(b"dotenv-was-read" in p.read_bytes() for p in files)  # the child read .env
    leaked = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert not leaked and key not in r.stdout + r.stderr
