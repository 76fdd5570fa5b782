"""reglab installed as a wheel (``pip install .``, not editable) runs from any folder: the config
ships inside the package as ``reglab.conf``.

The wheel is built from a copy of the working tree and installed with ``--no-deps`` into a fresh
virtual environment that sees this environment's packages (torch, Lightning, ...) through a
``.pth`` file, but not its editable reglab (a ``.pth`` inside a ``.pth`` folder is not read).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reglab.core.paths import ROOT_DIR

pytestmark = pytest.mark.slow


def sh(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("build")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ("src", "conf"):
        shutil.copytree(ROOT_DIR / name, tmp / name, symlinks=True, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT_DIR / name, tmp / name)
    (tmp / "conf" / "local" / "default.yaml").write_text("# this machine only\n")
    pip = [sys.executable, "-m", "pip"]
    sh(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", ".", cwd=tmp)
    (whl,) = (tmp / "dist").glob("reglab-*.whl")
    return whl


def test_the_wheel_holds_every_module_and_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT_DIR / "src")) for p in (ROOT_DIR / "src").rglob("*.py")}
    modules = {m for m in modules if not m.startswith("reglab/conf/")}
    assert modules and modules <= names, sorted(modules - names)
    conf = ROOT_DIR / "conf"
    local = conf / "local" / "default.yaml"  # one machine's settings (git-ignored): not shipped
    files = [p for p in conf.rglob("*") if p.suffix in (".yaml", ".md", ".py") and p != local]
    configs = {f"reglab/conf/{p.relative_to(conf)}" for p in files}
    assert f"reglab/conf/{local.relative_to(conf)}" not in names
    assert "reglab/conf/train.yaml" in configs and configs <= names, sorted(configs - names)


def test_installed_wheel_trains_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = sh(python, "-c", purelib, cwd=tmp_path).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = ["install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
    sh(python, "-m", "pip", *install, wheel, cwd=tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")
    where = sh(python, "-c", "import reglab; print(reglab.__file__)", cwd=work, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout  # not the source checkout
    train = ["trainer.max_epochs=1", "data.train_subset=100"]
    sh(venv / "bin" / "reglab-train", *train, cwd=work, env=env)
    (metrics,) = (work / "logs" / "runs").glob("*/metrics.json")
    summary = json.loads(metrics.read_text())
    assert summary["status"] == "ok" and summary["epochs_trained"] == 1
    hydra = OmegaConf.load(metrics.parent / ".hydra" / "hydra.yaml").hydra
    main = [s for s in hydra.runtime.config_sources if s.provider == "main"]
    assert [(s.schema, s.path) for s in main] == [("pkg", "reglab.conf")]
