"""What README.md says, checked against what is there: the Layout block against the files of
src/, each quoted ``reglab: error:`` line against the error reglab gives for that command, the
step count it quotes, the pre-commit hooks it describes, the Python names it cites.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from reglab.cli import check_group_choices, options
from reglab.core.config import to_plain
from reglab.core.errors import ReglabError
from reglab.core.paths import ROOT_DIR
from reglab.data import DataModule

from .conftest import compose_cfg, train, write_idx_dataset

README = (ROOT_DIR / "README.md").read_text()
SRC = ROOT_DIR / "src"
# The sections whose claims are checked here (the others are checked by their own tests).
SECTIONS = (
    "Quick start",
    "Choosing what to run",
    "Extend reglab",
    "Techniques",
    "Where outputs go",
    "How data is found",
    "Reliability",
    "Speed",
    "Layout",
)


def section(title: str) -> str:
    start = re.search(rf"^## {re.escape(title)}.*$", README, re.M).start()
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)


# ----------------------------------------------------------------------------- Layout


def layout() -> dict[str, set[str]]:
    """The Layout block as {folder: modules it names}, folders relative to the repository.

    A line at column 0 names a top-level folder; a line indented by two spaces names a module or
    a folder inside the last top-level one; deeper-indented lines continue the line above. A
    folder's modules are the ``*.py`` words of its line and continuations, relative to it.
    """
    (block,) = blocks(section("Layout"))[:1]
    entries: list[list[str]] = []  # [path, text]
    root = ""
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        name, _, text = line.strip().partition("  ")
        if indent == 0:
            root = name
            entries.append([name, text])
        elif indent == 2:
            entries.append([root + name, text])
        else:
            entries[-1][1] += " " + line.strip()
    named: dict[str, set[str]] = {}
    for path, text in entries:
        if path.endswith("/"):
            named[path] = set(re.findall(r"[\w/]+\.py\b", text))
        else:
            folder, _, module = path.rpartition("/")
            named.setdefault(folder + "/", set()).add(module)
    return named


def test_layout_names_every_module_of_src_and_nothing_else():
    named = layout()
    for folder in named:
        assert (ROOT_DIR / folder).is_dir(), f"README Layout names {folder}, which is not there"
    named = {folder: modules for folder, modules in named.items() if folder.startswith("src/")}
    listed = {f"{folder}{m}" for folder, modules in named.items() for m in modules}
    on_disk = {
        str(p.relative_to(ROOT_DIR))
        for p in SRC.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    on_disk = {p for p in on_disk if not p.startswith("src/reglab/conf/")}  # the link to conf/
    assert not on_disk - listed, f"not in README Layout: {sorted(on_disk - listed)}"
    assert not listed - on_disk, f"in README Layout, not on disk: {sorted(listed - on_disk)}"
    packages = {str(p.parent.relative_to(ROOT_DIR)) + "/" for p in SRC.rglob("__init__.py")}
    packages -= {"src/reglab/"}
    assert packages <= set(named), f"packages missing: {sorted(packages - set(named))}"


# ----------------------------------------------------------------------------- quoted errors


def quoted_errors() -> list[tuple[str, str]]:
    """``$ reglab-train ARGS`` lines of the checked sections, each with the line quoted below it
    that starts with ``reglab: error:``."""
    out = []
    for title in SECTIONS:
        for block in blocks(section(title)):
            lines = block.splitlines()
            for cmd, said in zip(lines, lines[1:], strict=False):
                if cmd.startswith("$ reglab-train ") and said.startswith("reglab: error: "):
                    out.append((cmd[len("$ reglab-train ") :], said))
    return out


ERRORS = quoted_errors()


def test_the_readme_quotes_errors():
    assert len(ERRORS) >= 3


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    """A finished ``model=mlp`` run with checkpoints, for the ``<mlp run>`` of a quoted command."""
    out = tmp_path_factory.mktemp("mlp_run")
    train(["model=mlp", "trainer.max_epochs=1", "logger=csv"], out)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out


def reglab_error(overrides: list[str], tmp_path: Path) -> str:
    """The ``reglab: error:`` line ``reglab-train OVERRIDES`` prints: the same checks in the same
    order (group options before Hydra, then the run's own checks), in this process."""
    try:
        check_group_choices(overrides)
        train(overrides, tmp_path)
    except ReglabError as e:
        return f"reglab: error: {e}"
    return "(no error)"


@pytest.mark.parametrize(("args", "said"), ERRORS, ids=[a for a, _ in ERRORS])
def test_quoted_error_is_the_one_reglab_gives(args, said, tmp_path, request):
    if "<mlp run>" in args:
        args = args.replace("logs/runs/<mlp run>", str(request.getfixturevalue("mlp_run")))
    assert "<" not in args, f"a placeholder this test cannot fill: {args}"
    got = reglab_error(args.split(), tmp_path)
    pattern = ".*".join(re.escape(part) for part in said.split("..."))
    assert re.fullmatch(pattern, got), f"README: {said}\nreglab: {got}"


# ----------------------------------------------------------------------------- the menu


def menu() -> list[tuple[str, set[str], str]]:
    """The rows of "Choosing what to run": (group, the options named, the example)."""
    rows = []
    for line in section("Choosing what to run").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            words = re.findall(r"`([^`]+)`", cells[1])
            named = {w for w in words if re.fullmatch(r"[a-z][a-z0-9_]*", w)}
            rows.append((cells[0].strip("`"), named, cells[2].strip("`")))
    return rows


def test_the_menu_names_each_groups_options():
    rows = menu()
    assert {"data", "model", "callbacks", "logger"} <= {g for g, _, _ in rows}
    for group, named, _ in rows:
        if group in ("regularizer", "augmentation"):  # multi-select: Techniques lists them
            assert named == {"none"}, group
        elif named:
            assert named == set(options(group)), f"README's {group} row: {sorted(named)}"


def test_the_menus_examples_compose(tmp_path):
    for group, _, example in menu():
        if "NAME" not in example:
            cfg = compose_cfg(example.split(), tmp_path / group)  # raises if it does not
            assert group in cfg or group == "debug"  # debug's options are global overrides


# ----------------------------------------------------------------------------- other claims


def test_quoted_step_counts_follow_from_the_data(tmp_path):
    """``30 epochs = 210 steps`` on Fashion-MNIST with ``data.train_subset=1000``: the training
    split's batches per epoch, times the epochs (a stand-in file of the same format; only the
    counts matter)."""
    text = section("Techniques")
    claims = re.findall(r"(\d+) epochs = (\d+)\s+steps", text)
    assert claims
    subset = re.search(r"data=fashion_mnist data\.train_subset=(\d+)", text)[1]
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=int(subset) + 200)
    overrides = ["data=fashion_mnist", f"data.train_subset={subset}", f"paths.data_dir={tmp_path}"]
    dm = DataModule(**to_plain(compose_cfg(overrides, tmp_path / "out").data))
    dm.setup("fit")
    for epochs, steps in claims:
        assert int(epochs) * len(dm.train_dataloader()) == int(steps)


def test_pre_commit_hooks_are_described_as_they_run():
    hooks = yaml.safe_load((ROOT_DIR / ".pre-commit-config.yaml").read_text())
    entries = [h["entry"] for repo in hooks["repos"] for h in repo["hooks"]]
    text = section("Quick start")
    assert "pre-commit install" in text
    for entry in entries:
        assert f"`{entry}`" in text, f"README Quick start does not say the hook runs `{entry}`"


def test_cited_python_names_exist():
    names = sorted({n for t in SECTIONS for n in re.findall(r"`(reglab\.[\w.]+)`", section(t))})
    assert names
    for name in names:
        parts = name.split(".")
        # The longest importable prefix, then attributes: reglab.core.technique.Technique.
        depth = max(i for i in range(1, len(parts) + 1) if importable(".".join(parts[:i])))
        obj = importlib.import_module(".".join(parts[:depth]))
        for attr in parts[depth:]:
            assert hasattr(obj, attr), f"README cites {name}: {obj.__name__} has no {attr}"
            obj = getattr(obj, attr)


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True
