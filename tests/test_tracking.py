"""W&B offline runs, the Optuna search, and the submitit launchers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from reglab.core.paths import CONF_DIR

from .conftest import FAST, ONE_SHORT_EPOCH, cli, compose_cfg, read_wandb_run, train

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
# Not fast_dev_run: Lightning replaces every logger by a dummy in that mode.
TINY_WANDB = ["logger=wandb", *ONE_SHORT_EPOCH]


def files_containing(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def offline_runs(root: Path) -> list[Path]:
    return sorted(root.rglob("wandb/offline-run-*"))


def test_wandb_offline_run_holds_config_summary_tags_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_NOTES", "")
    monkeypatch.delenv("WANDB_NOTES")  # so that teardown also removes the one .env sets
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("WANDB_NOTES=from the .env file\n")
    out = tmp_path / "run"
    summary = train([*TINY_WANDB, "regularizer=[l2]", "tags=[smoke]", "seed=3"], out)

    (run_dir,) = offline_runs(out)
    rec = read_wandb_run(run_dir)
    assert rec["run"]["name"] == "l2"
    assert rec["run"]["group"] == ""  # a single run belongs to no sweep
    assert rec["run"]["notes"] == "from the .env file"
    assert set(rec["run"]["tags"]) == {"digits", "mlp", "l2", "smoke"}
    assert rec["config"]["data"]["name"] == "digits"
    default = OmegaConf.load(CONF_DIR / "regularizer" / "l2.yaml").l2.strength
    assert rec["config"]["regularizer"]["l2"]["strength"] == pytest.approx(default)
    assert rec["config"]["seed"] == 3
    s = rec["summary"]
    assert s["status"] == "ok" and s["name"] == "l2" and s["techniques/regularizer"] == "l2"
    for key in ("test/acc", "val/acc_best", "gap/acc", "weights/sparsity", "epochs_trained"):
        assert s[key] == pytest.approx(summary[key]), key

    images = [f for f in rec["files"] if f.startswith("media/images/train/augmented")]
    assert len(images) == 16
    assert all((run_dir / "files" / f).stat().st_size > 0 for f in images)
    logged = [row for row in rec["history"] if "train/augmented/count" in row]
    assert len(logged) == 1 and logged[0]["train/augmented/count"] == 16

    assert files_containing(out, FAKE_KEY) == []


def test_failed_run_is_closed_as_failed_and_the_next_run_is_its_own(tmp_path, monkeypatch):
    from reglab.core.errors import DivergenceError

    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(DivergenceError):
        train([*TINY_WANDB, "optimizer.lr=1e30", "trainer.limit_train_batches=3"], tmp_path / "a")
    (failed,) = offline_runs(tmp_path / "a")
    s = read_wandb_run(failed)["summary"]
    assert s["status"] == "failed" and "DivergenceError" in s["error"]

    # As the next job of a sequential sweep: a run of its own, not the failed one reopened.
    train(TINY_WANDB, tmp_path / "b")
    (ok,) = offline_runs(tmp_path / "b")
    assert read_wandb_run(ok)["summary"]["status"] == "ok"


def test_images_do_not_change_the_training(tmp_path, monkeypatch):
    """Logging augmented images draws from a forked RNG: same seed, same result with W&B on."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    tiny = [*TINY_WANDB[1:], "augmentation=[affine]"]
    with_wandb = train([*tiny, "logger=wandb"], tmp_path / "a")
    without = train([*tiny, "logger=csv"], tmp_path / "b")
    assert with_wandb["train/loss"] == without["train/loss"]
    assert with_wandb["test/acc"] == without["test/acc"]


@pytest.mark.slow
def test_wandb_sweep_groups_runs_and_logs_the_report_table(tmp_path):
    r = cli(
        "reglab-train",
        "-m",
        *TINY_WANDB,
        "seed=1,2",
        f"paths.log_dir={tmp_path}",
        env={"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()

    jobs = [read_wandb_run(d) for d in offline_runs(sweep) if d.parents[1] != sweep]
    assert len(jobs) == 2
    assert {j["run"]["group"] for j in jobs} == {sweep.name}
    assert sorted(j["config"]["seed"] for j in jobs) == [1, 2]
    assert all(j["summary"]["status"] == "ok" for j in jobs)

    (report_dir,) = [d for d in offline_runs(sweep) if d.parents[1] == sweep]
    report = read_wandb_run(report_dir)
    assert report["run"]["name"] == "report" and report["run"]["job_type"] == "report"
    assert report["run"]["group"] == sweep.name
    (table_file,) = [f for f in report["files"] if f.startswith("media/table/report/results")]
    table = json.loads((report_dir / "files" / table_file).read_text())
    results = (sweep / "results.csv").read_text().splitlines()
    assert len(table["data"]) == len(results) - 1
    assert table["columns"] == results[0].split(",")
    assert any(f.startswith("media/images/report/") for f in report["files"])  # the plots

    assert files_containing(sweep, FAKE_KEY) == []


def test_no_report_run_without_wandb(tmp_path):
    from reglab.training.loggers import log_report_table

    (tmp_path / "results.csv").write_text("technique,n\nbaseline,1\n")
    cfg = compose_cfg(["logger=csv"], tmp_path / "x")
    assert log_report_table(tmp_path, cfg) is None
    assert not (tmp_path / "wandb").exists()


# ----------------------------------------------------------------------------- W&B, no login


def _train_without_wandb_login(tmp_path: Path, *args: str, env: dict | None = None):
    """``reglab-train logger=wandb`` as a new user runs it: no key, no WANDB_MODE, no netrc (an
    empty HOME), stdin closed; this machine has no route to the W&B server either."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    drop = ("WANDB_", "NETRC", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    child = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # An empty WANDB_API_KEY shields the run from a developer's .env, which never overrides.
    child.update({"HOME": str(home), "WANDB_API_KEY": "", "OMP_NUM_THREADS": "1", **(env or {})})
    exe = Path(sys.executable).parent / "reglab-train"
    logs = tmp_path / "logs"
    cmd = [
        str(exe),
        "logger=wandb",
        "trainer.max_epochs=1",
        "callbacks=none",
        f"paths.log_dir={logs}",
        *args,
    ]
    r = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=child,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return r, logs


def _one_warning(r) -> str:
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("reglab: warning:")]
    return line


@pytest.mark.slow
def test_wandb_without_a_key_logs_offline_and_says_how_to_sync(tmp_path):
    r, logs = _train_without_wandb_login(tmp_path)
    line = _one_warning(r)
    (run,) = (logs / "runs").iterdir()
    assert "no W&B API key" in line and "`wandb login`" in line
    assert f"`wandb sync {run}/wandb/offline-run-*`" in line
    (offline,) = offline_runs(run)
    assert any(offline.glob("run-*.wandb"))  # what `wandb sync` uploads
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_wandb_with_a_key_but_no_server_logs_offline_instead_of_waiting(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    r, logs = _train_without_wandb_login(
        tmp_path, env={"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": url}
    )
    line = _one_warning(r)  # wandb itself waits 90 s, then stops with a CommError traceback
    assert f"the W&B server {url} cannot be reached" in line and "wandb sync" in line
    (run,) = (logs / "runs").iterdir()
    assert offline_runs(run) and files_containing(run, FAKE_KEY) == []


def test_wandb_mode_or_offline_setting_needs_no_key_check(monkeypatch):
    import wandb

    from reglab.training.loggers import offline_reason

    def login(**kwargs):
        raise AssertionError("no key lookup when the user said what to do")

    monkeypatch.setattr(wandb, "login", login)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert offline_reason({"offline": False}) is None
    monkeypatch.delenv("WANDB_MODE")
    assert offline_reason({"offline": True}) is None
    with pytest.raises(AssertionError, match="no key lookup"):
        offline_reason({"offline": False})


# ----------------------------------------------------------------------------- Optuna


@pytest.mark.slow
def test_optuna_search_finds_best_and_persists_the_study(tmp_path):
    """4 trials of the L2 strength search; a second, categorical dimension makes some trials
    fail (a validation fraction over 1 is refused): they are recorded as failed, the search goes on."""
    r = cli(
        "reglab-train",
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "+hydra.sweeper.search.data={val_fraction:{type:choice,choices:[0.1,1.5]}}",
        "hydra.callbacks.report.fail_on_error=false",
        *FAST,
        f"paths.log_dir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())

    db = tmp_path / "optuna" / "optuna.db"
    study = optuna.load_study(study_name=best["name"], storage=f"sqlite:///{db}")
    assert len(study.trials) == 4
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    failed = study.get_trials(states=[optuna.trial.TrialState.FAIL])
    assert done and failed and len(done) + len(failed) == 4
    assert all(t.params["data.val_fraction"] == 0.1 for t in done)
    assert all(t.params["data.val_fraction"] == 1.5 for t in failed)
    assert best["best_params"] == study.best_params
    assert best["best_value"] == pytest.approx(min(t.value for t in done))  # validation NLL
    assert 1e-6 <= best["best_params"]["regularizer.l2.strength"] <= 1e-2

    # Each trial ran its suggested values in a folder of its own; a complete one reported that
    # run's lowest validation NLL, and says which trial it was.
    for t in study.trials:
        (path,) = (sweep / "trials" / str(t.number)).glob("seed_*/metrics.json")
        run = json.loads(path.read_text())
        config = yaml.safe_load((path.parent.parent / ".hydra" / "config.yaml").read_text())
        assert config["regularizer"]["l2"]["strength"] == pytest.approx(
            t.params["regularizer.l2.strength"]
        )
        assert run["protocol"]["trial"] == t.number and run["protocol"]["stage"] == "search"
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run["status"] == "ok" and run["val/loss_best"] == pytest.approx(t.value)
        else:
            assert run["status"] == "failed" and "val_fraction" in run["error"]


def test_search_space_error_is_one_line_from_the_shell(tmp_path):
    """The file's space names a knob of a technique this run does not select."""
    r = cli(
        "reglab-train",
        "-m",
        "hparams_search=optuna",
        "regularizer=[dropout]",
        *FAST,
        f"paths.log_dir={tmp_path}",
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "reglab: error: hydra.sweeper.search: regularizer.l2.strength is not a key of this "
        "run's config; select it (regularizer=[l2])"
    )
    assert not any((tmp_path / "sweeps").glob("*/*"))  # refused before anything ran


def test_sqlite_storage_creates_its_folder(tmp_path):
    from reglab.tune.studies import storage_url

    url = storage_url(f"sqlite:///{tmp_path / 'a' / 'b' / 'study.db'}", tmp_path)
    assert url == f"sqlite:///{tmp_path}/a/b/study.db"
    assert (tmp_path / "a" / "b").is_dir()


# ----------------------------------------------------------------------------- launchers


@pytest.mark.slow
def test_submitit_local_multirun_runs_each_job_in_its_own_process(tmp_path):
    r = cli(
        "reglab-train",
        "-m",
        "hydra/launcher=submitit_local",
        "seed=1,2",
        *FAST,
        f"paths.log_dir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [m["status"] for m in metrics] == ["ok", "ok"]
    assert sorted(m["seed"] for m in metrics) == [1, 2]
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2  # one process per job


def test_slurm_launcher_turns_knobs_into_sbatch_options(tmp_path, monkeypatch):
    """The sbatch script submitit would submit for hydra/launcher=slurm (no cluster needed)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import HydraContext
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf
    from submitit.slurm import slurm

    from reglab.core.paths import CONF_DIR

    bin_dir = tmp_path / "bin"  # submitit refuses to build a SLURM executor without srun
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=2",
                "hydra.launcher.timeout_min=30",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    launcher = SlurmLauncher(**params)
    launcher.setup(
        hydra_context=HydraContext(config_loader=None, callbacks=None),
        task_function=lambda c: None,
        config=cfg,
    )

    scripts = []

    class Submitted(Exception):
        pass

    def capture(self, command):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise Submitted

    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", capture)
    with pytest.raises(Submitted):
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    (script,) = scripts
    for line in (
        "--partition=gpu",
        "--gpus-per-node=2",
        "--time=30",
        "--array=0-1",
        "--cpus-per-task=8",
        "--mem=32GB",
    ):
        assert f"#SBATCH {line}" in script, line
