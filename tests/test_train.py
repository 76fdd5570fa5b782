import json
import os

import pytest
import torch

from reglab.data import SYSTEM_FASHION_MNIST
from reglab.models import MODELS

from .conftest import FAST, cli, compose_cfg, read_wandb_run, train

DATASETS = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"]


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_data_model_pair_runs(data, model, fake_data_dir, tmp_path):
    extra = ["model.width=8"] if model == "resnet18" else []
    s = train([*FAST, f"data={data}", f"model={model}", *extra], tmp_path, fake_data_dir)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["data"] == data and saved["model"] == model
    for key in ("test/acc", "test/ece", "gap/acc", "weights/sparsity", "wall_time_s", "seed"):
        assert key in saved, key
    assert 0.0 <= s["test/acc"] <= 1.0


def test_metrics_json_holds_design_names(tmp_path):
    s = train(["trainer.max_epochs=3", "callbacks=default"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/loss",
        "test/acc",
        "test/ece",
        "gap/acc",
        "weights/l1",
        "weights/l2",
        "weights/sparsity",
        "epochs_trained",
        "wall_time_s",
        "techniques",
        "seed",
    ):
        assert key in saved, key
    assert saved["epochs_trained"] == 3 and len(saved["history"]) == 3
    assert saved["val/acc_best"] >= max(r["val/acc"] for r in saved["history"]) - 1e-6
    assert (
        saved["tested"] == "best checkpoint" and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    )
    assert s["test/acc"] > 0.8


def test_resume_from_last_ckpt_continues_at_the_right_epoch(tmp_path):
    first = train(["trainer.max_epochs=2", "callbacks=default"], tmp_path / "a")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = train(
        ["trainer.max_epochs=4", "callbacks=default", f"ckpt_path={last}"], tmp_path / "b"
    )
    assert resumed["epochs_trained"] == 4
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][:2] == first["history"]
    assert resumed["global_step"] == 2 * first["global_step"]


@pytest.mark.slow
def test_real_fashion_mnist_mlp_one_epoch(tmp_path):
    if not SYSTEM_FASHION_MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (see .ci/run)")
        pytest.skip("Debian dataset-fashion-mnist not installed")
    s = train(
        ["data=fashion_mnist", "model=mlp", "trainer.max_epochs=1", "callbacks=none"],
        tmp_path,
        tmp_path / "no-local-data",
    )
    assert s["test/acc"] >= 0.82


def test_cli_default_run_meets_the_quick_start_promise(tmp_path):
    r = cli("reglab-train", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    (metrics,) = tmp_path.glob("runs/*/metrics.json")
    saved = json.loads(metrics.read_text())
    assert saved["test/acc"] >= 0.95 and saved["data"] == "digits"
    assert (metrics.parent / ".hydra" / "config.yaml").is_file()


def test_cli_missing_dataset_is_one_line_and_nonzero(tmp_path):
    r = cli(
        "reglab-train",
        "data=mnist",
        f"paths.data_dir={tmp_path / 'empty'}",
        f"paths.log_dir={tmp_path}",
        "data.download=false",
    )
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("reglab: error:")]
    assert len(errors) == 1 and "mnist" in errors[0] and "data.data_dir=" in errors[0]
    assert "Traceback" not in r.stderr


def test_cli_missing_dataset_offline_download_fails_cleanly(tmp_path):
    # No network here: torchvision's download fails and must end in the same one-line error.
    r = cli(
        "reglab-train",
        "data=cifar10",
        f"paths.data_dir={tmp_path / 'empty'}",
        f"paths.log_dir={tmp_path}",
        env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "reglab: error: dataset 'cifar10' not found" in r.stderr


def test_wandb_offline_writes_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(["logger=wandb", "trainer.max_epochs=2", "callbacks=none"], tmp_path)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_wandb_run(run_dir)
    assert run["config"]["data"]["name"] == "digits" and "optimizer" in run["config"]
    logged = {k for row in run["history"] for k in row}
    assert {"val/acc", "train/loss", "test/acc", "weights/sparsity"} <= logged
    assert 0.5 < run["summary"]["test/acc"] <= 1.0 and run["summary"]["status"] == "ok"


def test_run_folder_wandb_and_metrics_names_agree(tmp_path):
    from omegaconf import OmegaConf

    from reglab.core.config import run_name

    cfg = compose_cfg(["regularizer=[l2,dropout]", "augmentation=[affine]"], tmp_path)
    resolved = OmegaConf.create({"n": "${reglab_run_name:}", **OmegaConf.to_container(cfg)}).n
    assert resolved == run_name(cfg) == "dropout+l2+affine"


def test_a_run_without_test_batches_reports_validation_only(tmp_path):
    """Tuning trials never touch the test set: such a run ends normally, with no test metric."""
    r = cli(
        "reglab-train",
        "trainer.max_epochs=1",
        "callbacks=none",
        "++trainer.limit_test_batches=0",
        f"paths.log_dir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(not tested)" in r.stdout
    (m,) = tmp_path.glob("runs/*/metrics.json")
    saved = json.loads(m.read_text())
    assert saved["status"] == "ok" and "val/acc_best" in saved
    assert not any(k.startswith("test/") for k in saved)
