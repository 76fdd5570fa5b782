"""The README's "Extend reglab" recipes, read from README.md and followed to the letter.

Each recipe's code blocks go into the files it names (the backticked path ending the line above a
block), in a copy of the repository, and its "Run it:" command runs there as a user would type it;
the technique recipe also passes the registry tests in the copy. A recipe that drifts from the
code (a wrong import, a YAML of the wrong shape, a module that does not import) fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from reglab.cli import check_group_choices
from reglab.core.errors import ConfigError
from reglab.core.paths import ROOT_DIR

from .conftest import FAST, train

README = ROOT_DIR / "README.md"
BIN = Path(sys.executable).parent
# Appended to each recipe's command: one batch of each split, no checkpoints.
TINY = [*FAST]
SHAPES = "/path/to/shapes"  # the dataset recipe's placeholder for the folder of images


@dataclass
class Recipe:
    title: str
    files: list[tuple[str, str]] = field(default_factory=list)  # (path, text of the block)
    command: str = ""


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def recipes() -> list[Recipe]:
    """The recipes of README's "Extend reglab": a bold title starts one."""
    out: list[Recipe] = []
    lines = section(README.read_text(), "Extend reglab").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        title = re.match(r"\*\*(.+?)\*\*", line)
        if title:
            out.append(Recipe(title[1].rstrip(".")))
        elif line.startswith("```") and out:
            end = lines.index("```", i + 1)
            above = next(x for x in reversed(lines[:i]) if x.strip())
            path = re.search(r"`([^`]+)`:$", above)
            assert path, f"{out[-1].title}: the line above a block must end with `path`: {above}"
            out[-1].files.append((path[1], "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        elif out:
            run = re.search(r"Run it: `([^`]+)`", line)
            if run:
                out[-1].command = run[1]
        i += 1
    return out


RECIPES = {r.title: r for r in recipes()}


def test_every_recipe_names_its_files_and_a_command():
    assert {"A technique", "A model", "A technique from your own config folder"} <= set(RECIPES)
    for r in RECIPES.values():
        group = r.command.split()[-1].strip('"').partition("=")[0]
        assert r.files and group in ("regularizer", "model", "data", "optimizer"), r
    for title in ("A technique", "A model", "A technique from your own config folder"):
        kinds = {Path(p).suffix for p, _ in RECIPES[title].files}
        assert kinds == {".py", ".yaml"}, f"{title}: a class (or factory) AND a YAML"


def write(root: Path, recipe: Recipe) -> None:
    for rel, text in recipe.files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else ""  # appended to an existing module
        path.write_text(f"{old}\n\n{text}" if old else text)


def shapes_folder(root: Path) -> Path:
    """Two classes of 12x12 grey images, a bright bar at the top or at the bottom."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        for label, row in (("bar_top", 2), ("bar_bottom", 9)):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 40, (12, 12), dtype=np.uint8)
                pixels[row : row + 2] = 250
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- in this process


def test_technique_from_a_folder_outside_the_repository(tmp_path, monkeypatch):
    """The last recipe's files in a folder of their own: selectable with regularizer=[...] once
    that folder is on hydra.searchpath, refused (with the options) without it."""
    recipe = RECIPES["A technique from your own config folder"]
    write(tmp_path, recipe)
    (folder,) = {Path(p).parts[0] for p, _ in recipe.files}
    monkeypatch.syspath_prepend(str(tmp_path / folder))  # the recipe's PYTHONPATH=my_reglab
    search = f"hydra.searchpath=[file://{tmp_path / folder / 'conf'}]"
    with pytest.raises(ConfigError, match=r"regularizer=shrink_last is not an option"):
        check_group_choices(["regularizer=[shrink_last]"])
    check_group_choices(["regularizer=[shrink_last]", search])

    base = train([*FAST, search], tmp_path / "base")
    strong = ["regularizer=[shrink_last]", "regularizer.shrink_last.strength=50"]
    s = train([*FAST, search, *strong], tmp_path / "mine")
    assert s["techniques"]["regularizer"] == ["shrink_last"] and s["name"] == "shrink_last"
    assert s["weights/l2"] < base["weights/l2"]  # the penalty pulled the weights in


# ----------------------------------------------------------------------------- in a copy


def copy_of_the_repository(dest: Path) -> Path:
    """The working tree as a user has it after cloning (links kept: src/reglab/conf -> conf)."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "conf", "tests", "pyproject.toml", "README.md"):
        src = ROOT_DIR / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(src, dest / name)
    return dest


def run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    args = ["bash", "-c", command]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("title", sorted(RECIPES))
def test_recipe_followed_to_the_letter(title, tmp_path):
    recipe = RECIPES[title]
    repo = copy_of_the_repository(tmp_path / "reglab")
    outside = not any(p.startswith(("src/", "conf/")) for p, _ in recipe.files)
    # The repository's own recipes run in the copy, with its src/ first on the path; the last one
    # runs from a folder of its own, against the installed reglab, as a user outside would.
    cwd = tmp_path / "elsewhere" if outside else repo
    cwd.mkdir(exist_ok=True)
    write(cwd, recipe)
    for rel, text in recipe.files:
        if SHAPES in text:
            path = cwd / rel
            path.write_text(path.read_text().replace(SHAPES, str(shapes_folder(tmp_path / "s"))))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "WANDB_MODE": "offline"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH="" if outside else str(repo / "src"))

    r = run(f"{recipe.command} {' '.join(TINY)}", cwd, env)
    assert r.returncode == 0, r.stderr[-3000:]
    (metrics,) = (cwd / "logs" / "runs").glob("*/metrics.json")
    summary = json.loads(metrics.read_text())
    assert summary["status"] == "ok" and summary["global_step"] >= 1
    group, _, names = recipe.command.split()[-1].strip('"').partition("=")
    if group == "regularizer":
        assert set(names.strip("[]").split(",")) == set(summary["techniques"][group])
    else:
        choices = OmegaConf.load(metrics.parent / ".hydra" / "hydra.yaml").hydra.runtime.choices
        assert choices[group] == names

    if title == "A technique":
        name = names.strip("[]")
        pytest_args = "-q -p no:xdist -p no:cacheprovider tests/test_registry.py"
        r = run(f"{BIN}/python -m pytest {pytest_args} -k {name}", repo, env)
        assert r.returncode == 0, r.stdout[-3000:]
        passed = re.search(r"(\d+) passed", r.stdout)
        assert passed and int(passed[1]) >= 5, r.stdout[-500:]  # its shape, 4 runs or more
