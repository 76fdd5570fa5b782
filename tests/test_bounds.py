"""pyproject.toml's dependencies: every import of src/ is declared, every requirement has a lower
bound (.ci/lowest installs and runs them), the ruff pins agree, and an optional path without its
extra says in one line which extra to install."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from reglab.core.paths import ROOT_DIR

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

PROJECT = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# Imported by src/ yet installed by another requirement, at the version that one needs.
COMES_WITH = {
    "lightning_fabric": "pytorch-lightning",  # Lightning's own lower layer, same release
    "PIL": "torchvision",  # pillow: torchvision's image reader
    "sqlalchemy": "optuna",  # Optuna's SQL storage
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalized(re.match(r"[A-Za-z0-9_.\-]+", req)[0])


def lower_bounds_module():
    spec = importlib.util.spec_from_file_location("lower_bounds", ROOT_DIR / ".ci/lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_top_level(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_of_src_is_declared():
    declared = {requirement_name(r) for r in PROJECT["dependencies"]}
    declared |= {requirement_name(r) for reqs in EXTRAS.values() for r in reqs}
    dists = metadata.packages_distributions()
    ours = {"reglab", "hydra_plugins", "__future__"}
    undeclared = set()
    for path in (ROOT_DIR / "src").rglob("*.py"):
        for module in imported_top_level(path) - ours - set(sys.stdlib_module_names):
            if module in COMES_WITH:
                assert normalized(COMES_WITH[module]) in declared
                continue
            names = {normalized(d) for d in dists.get(module, [module])}
            if not names & declared:
                undeclared.add(f"{module} ({path.relative_to(ROOT_DIR)})")
    assert not undeclared, f"imported but not in pyproject.toml: {sorted(undeclared)}"


def test_every_requirement_has_a_lower_bound_for_ci():
    bounds = lower_bounds_module().lower_bounds()
    own = f"{PROJECT['name']}["
    reqs = [*PROJECT["dependencies"], *(r for v in EXTRAS.values() for r in v)]
    assert len(bounds) == len([r for r in reqs if not r.startswith(own)])
    assert bounds["pytorch-lightning"] == "2.6.0"  # pl.callbacks.EMAWeightAveraging
    assert bounds["wandb"] == "0.19.10"  # wandb.init(reinit="finish_previous")


def test_dev_brings_every_extra_and_ruff_is_pinned_like_pre_commit():
    (own,) = [r for r in EXTRAS["dev"] if r.startswith(f"{PROJECT['name']}[")]
    assert set(own[len(PROJECT["name"]) + 1 : -1].split(",")) == set(EXTRAS) - {"dev"}
    (ruff,) = [r for r in EXTRAS["dev"] if requirement_name(r) == "ruff"]
    assert re.fullmatch(r"ruff==[0-9.]+", ruff)
    hooks = yaml.safe_load((ROOT_DIR / ".pre-commit-config.yaml").read_text())
    pins = {
        dep
        for repo in hooks["repos"]
        for hook in repo["hooks"]
        if hook["entry"].startswith("ruff ")
        for dep in hook.get("additional_dependencies", [])
    }
    assert pins == {ruff}


@pytest.mark.parametrize(
    ("override", "module", "extra"),
    [
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
        ("logger=tensorboard", "tensorboard", "tensorboard"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(override, module, extra, tmp_path):
    """The package hidden by a meta path finder that refuses to import it."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    argv = [override, "debug=fast", "callbacks=none", f"paths.log_dir={tmp_path}"]
    r = subprocess.run(
        [sys.executable, "-m", "reglab.train", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        f"reglab: error: {override} needs the {extra} extra: pip install 'reglab[{extra}]'"
    )
