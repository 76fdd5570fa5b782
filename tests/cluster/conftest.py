"""A SLURM cluster for the tests marked ``slurm``, and ``reglab-train`` run against it.

The tests need a cluster that answers ``sinfo`` with a usable node in its default partition
(CI starts a one-node one on the test machine with ``.ci/slurm-up``); anywhere else they skip
with the reason. Jobs read and write the test's folders, so the login node and the compute
node must share the file system: true of the one-node cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reglab.core.paths import ROOT_DIR

READY = {"idle", "mix", "mixed", "alloc", "allocated", "comp", "completing"}
# A job that leaves the queue without a result (killed, or never started) is invisible to
# submitit on a cluster without accounting (no sacct), and the login process would wait forever.
GONE_S = 90


def _default_partition() -> tuple[str | None, str]:
    """The default partition when one of its nodes can take jobs, else None and why not."""
    if shutil.which("sinfo") is None:
        return None, "no SLURM here (sinfo not found); .ci/slurm-up starts a one-node cluster"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer in 10 s"
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"sinfo failed: {why} (.ci/slurm-up starts a one-node cluster)"
    default = [line.split() for line in out.stdout.splitlines() if "*" in line.split()[0]]
    if not default:
        return None, "sinfo lists no default partition"
    name = default[0][0].rstrip("*")
    states = {state.rstrip("*~#$@+^-!%") for _, state in default}
    if not states & READY:
        return None, f"partition {name} has no node that can run jobs (states: {sorted(states)})"
    return name, ""


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    name, why = _default_partition()
    if name is None:
        pytest.skip(f"slurm: {why}")
    return name


def _command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "reglab-train"), *args]


# The environment goes with each sbatch (its default --export=ALL), so the jobs find this venv.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


@dataclass
class Cluster:
    partition: str
    job_name: str  # this test's jobs, and only them: what squeue watches and scancel ends

    def sweep(self, *overrides: str, log: Path, timeout: int = 600) -> tuple[int, str]:
        """``reglab-train -m OVERRIDES`` on the cluster, waited for as on a login node; returns
        the exit status and the output. Fails the test if its jobs leave the queue and the
        command still waits ``GONE_S`` seconds later, or if it runs past ``timeout``."""
        launch = [
            f"hydra.launcher.partition={self.partition}",
            f"hydra.launcher.name={self.job_name}",
        ]
        with open(log, "w") as f:
            proc = subprocess.Popen(
                _command("-m", *launch, *overrides), cwd=ROOT_DIR, env=ENV, stdout=f, stderr=f
            )
        start, seen, gone_since = time.monotonic(), False, None
        try:
            while proc.poll() is None:
                time.sleep(2)
                now = time.monotonic()
                if now - start > timeout:
                    pytest.fail(f"reglab-train -m ran past {timeout} s; output in {log}")
                if self.queued():
                    seen, gone_since = True, None
                elif seen:
                    gone_since = gone_since or now
                    if now - gone_since > GONE_S:
                        pytest.fail(f"the jobs left the queue without a result; output in {log}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, log.read_text()

    def queued(self) -> bool:
        out = subprocess.run(
            ["squeue", "-h", f"--name={self.job_name}", "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.returncode != 0 or bool(out.stdout.strip())  # no answer: assume still there


@pytest.fixture
def cluster(slurm_partition, request) -> Iterator[Cluster]:
    name = f"reglab-test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    yield Cluster(slurm_partition, name)
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)


def start_reglab_train(*overrides: str, log: Path) -> subprocess.Popen:
    """``reglab-train OVERRIDES`` in the background (no SLURM), its output in ``log``."""
    with open(log, "w") as f:
        return subprocess.Popen(
            _command(*overrides), cwd=ROOT_DIR, env=ENV, stdout=f, stderr=subprocess.STDOUT
        )


def job_logs(sweep_dir: Path) -> str:
    """Everything submitit's jobs wrote: each job's stdout and stderr, all attempts (a requeued
    job appends to the same files)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").glob("*/*_log.*")))
