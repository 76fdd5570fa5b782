"""A tiny comparison end to end, and a comparison killed at several points that ends with the
same table as one never interrupted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from reglab.core.plan import BASELINE, COCKTAIL, USE

from ..conftest import cli, kill_when, popen_train
from ..test_dashboards import free_port, get_json

ARMS = ["l2", "batch_norm"]
LOOKS = [2, 4]
TUNE_SEEDS = [1001, 1002]
# The basic launcher runs the jobs one after the other in the driver's process: the quickest for
# a few dozen tiny runs. min_delta=-1 lets every arm into the cocktail.
COMMAND = [
    "-m",
    "experiment=compare",
    "hydra/launcher=basic",
    f"hydra.sweeper.protocol.arms=[{','.join(ARMS)}]",
    "hydra.sweeper.n_trials=2",
    f"hydra.sweeper.protocol.design.looks=[{','.join(map(str, LOOKS))}]",
    "hydra.sweeper.protocol.cocktail.trials=3",
    "hydra.sweeper.protocol.cocktail.min_delta=-1",
    "hydra.sweeper.protocol.shared.trainer.max_epochs={type:int,low:2,high:3}",
    "data.train_subset=50",
]


def dashboard_studies(db: Path) -> list[str]:
    """The study names optuna-dashboard lists for ``db``, asked on localhost."""
    port = free_port()
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is not installed: pip install -e '.[dev]'"
    command = [exe, "--host", "127.0.0.1", "--port", str(port), "--quiet", f"sqlite:///{db}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listed = get_json(f"http://127.0.0.1:{port}/api/studies", proc=proc)["study_summaries"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return [s["study_name"] for s in listed]


def runs(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("seed_*/metrics.json"))]


def table(log_dir: Path) -> dict:
    """Every trial of every study of the comparison: what a resumed run must reproduce."""
    storage = f"sqlite:///{log_dir / 'optuna' / 'optuna.db'}"
    out = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        key = summary.study_name.partition("/")[2] or "index"
        out[key] = sorted(
            (t.number, t.state.name, t.value, json.dumps(t.params, sort_keys=True))
            for t in study.trials
        )
    return out


@pytest.mark.slow
def test_tiny_comparison_end_to_end(tmp_path):
    r = cli("reglab-train", *COMMAND, f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    done = runs(sweep)
    by_stage: dict[str, list[dict]] = {}
    for m in done:
        by_stage.setdefault(m["protocol"]["stage"], []).append(m)

    # Stage 1: the same budget for every arm, the baseline included; validation only, on the
    # tuning splits, never tested.
    tune = by_stage["tune"]
    trials = {}
    for m in tune:
        trials.setdefault(m["protocol"]["arm"], set()).add(m["protocol"]["trial"])
        assert m["seed"] in TUNE_SEEDS and not any(k.startswith("test/") for k in m)
        assert "optimizer.lr" in m["protocol"]["params"]  # the shared knobs, for every arm
    assert trials == {arm: {0, 1} for arm in [BASELINE, *ARMS]}
    # Without a pruner the trials train as stacked jobs; with the basic launcher (one job at a
    # time) every arm's trials share one: 3 arms x 2 trials x the tuning splits, each member in
    # its own trial's folder.
    splits = {m["seed"] for m in tune}
    assert {m["stack_size"] for m in tune} == {3 * 2 * len(splits)}
    members = {Path(m["stack_member"]).relative_to(sweep).as_posix() for m in tune}
    assert members == {
        f"tune/{a}/{t}/seed_{s}" for a in [BASELINE, *ARMS] for t in (0, 1) for s in splits
    }
    # So do the arms' test seeds of a look, on their paired seeds.
    assert {m["stack_size"] for m in by_stage["test"] if m["protocol"]["look"] == 0} == {6}

    # Stage 2: tested seeds come from the looks, and no tuning seed is ever tested.
    test = by_stage["test"]
    seeds = {}
    for m in test:
        seeds.setdefault(m["protocol"]["arm"], set()).add(m["seed"])
        assert "test/acc" in m and m["protocol"]["look"] in (0, 1)
    assert all(s in ({1, 2}, {1, 2, 3, 4}) for s in seeds.values()), seeds
    assert seeds[BASELINE] == max(seeds.values(), key=len)
    assert not set().union(*seeds.values()) & set(TUNE_SEEDS)

    # Stage 3: the cocktail's search started from every member alone and all together.
    cocktail = by_stage["cocktail_tune"]
    starts = {
        tuple(sorted(k for k, v in m["protocol"]["params"].items() if k.startswith(USE) and v))
        for m in cocktail
    }
    assert {(f"{USE}batch_norm",), (f"{USE}l2",), (f"{USE}batch_norm", f"{USE}l2")} <= starts
    assert {m["protocol"]["arm"] for m in by_stage["cocktail_test"]} == {COCKTAIL}

    # The console: a progress line per round, Hydra's per-job lines in the sweep's log.
    assert "runs done" in r.stderr and "ETA" in r.stderr
    assert max(len(line) for line in (r.stderr + r.stdout).splitlines()) <= 200
    assert "#0 :" in (sweep / "sweep.log").read_text()
    assert (sweep / "report.md").is_file()

    # optuna-dashboard opens the comparison's own storage: one study per arm and stage.
    studies = dashboard_studies(tmp_path / "optuna" / "optuna.db")
    assert {f"tune/{a}" for a in [BASELINE, *ARMS]} | {"cocktail_tune", f"test/{BASELINE}"} <= {
        name.partition("/")[2] for name in studies
    }

    # The same command again: nothing to do, the same folder.
    again = cli("reglab-train", *COMMAND, f"paths.log_dir={tmp_path}")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert runs(sweep) == done


@pytest.mark.slow
def test_a_killed_comparison_resumes_to_the_same_table(tmp_path):
    clean = tmp_path / "clean"
    r = cli("reglab-train", *COMMAND, f"paths.log_dir={clean}")
    assert r.returncode == 0, r.stderr[-3000:]
    killed = tmp_path / "killed"
    for landed in (3, 9, 16):  # in tuning, in the first look, in the cocktail's search
        proc = popen_train(*COMMAND, f"paths.log_dir={killed}")
        kill_when(
            proc,
            lambda n=landed: len(list(killed.rglob("seed_*/metrics.json"))) >= n,
            f"{landed} runs",
        )
    r = cli("reglab-train", *COMMAND, f"paths.log_dir={killed}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert table(killed) == table(clean)
    (sweep,) = (killed / "sweeps").iterdir()  # the restarts went on in the first folder
    assert len(runs(sweep)) == len(runs(next((clean / "sweeps").iterdir())))


@pytest.mark.slow
def test_a_technique_from_a_folder_outside_the_repository_joins_the_comparison(tmp_path):
    """Arms come from Hydra's config search path: a YAML in the user's own folder is one."""
    conf = tmp_path / "my_conf" / "regularizer"
    conf.mkdir(parents=True)
    (conf / "tiny_l2.yaml").write_text(
        "# L2 from my own folder.\n"
        "tiny_l2:\n"
        "  _target_: reglab.regularizers.L2\n"
        "  strength: 1.0e-3\n"
        "  _search_:\n"
        "    strength: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n"
    )
    r = cli(
        "reglab-train",
        "-m",
        "experiment=compare",
        "hydra/launcher=basic",
        f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
        "hydra.sweeper.protocol.arms=[tiny_l2]",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.protocol.design.looks=[2]",
        "hydra.sweeper.protocol.cocktail.trials=0",
        "hydra.sweeper.protocol.shared.trainer.max_epochs={type:int,low:2,high:2}",
        "data.train_subset=50",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "sweeps").iterdir()
    arms = {m["protocol"]["arm"] for m in runs(sweep) if m["protocol"]["stage"] == "test"}
    assert arms == {BASELINE, "tiny_l2"}
    tuned = [m for m in runs(sweep) if m["protocol"]["arm"] == "tiny_l2"]
    assert all("regularizer.tiny_l2.strength" in m["protocol"]["params"] for m in tuned)
