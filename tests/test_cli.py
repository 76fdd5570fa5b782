"""What every console script does before Hydra (reglab.cli): group options as Hydra finds them,
the folder a run writes under."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reglab.cli import check_group_choices, options
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR

from .conftest import compose_cfg


def own_folder(tmp_path: Path) -> str:
    """A config folder outside the repository with one regularizer option, ``my_l2``."""
    (tmp_path / "mine" / "regularizer").mkdir(parents=True)
    (tmp_path / "mine" / "regularizer" / "my_l2.yaml").write_text(
        "# L2 under another name.\nmy_l2:\n  _target_: reglab.regularizers.L2\n"
    )
    return f"hydra.searchpath=[file://{tmp_path / 'mine'}]"


def test_shared_base_files_are_not_options():
    assert "_base" not in options("data")
    assert {"digits", "kmnist", "image_folder"} <= set(options("data"))
    with pytest.raises(ConfigError, match=r"data=_base is not an option"):
        check_group_choices(["data=_base"])


def test_options_are_the_groups_yaml_files():
    # The config loader sees what is on disk: every YAML of the group, nothing else.
    on_disk = sorted(p.stem for p in (CONF_DIR / "regularizer").glob("*.yaml"))
    assert options("regularizer") == on_disk
    assert options("seed") == []  # a key, not a group


def test_options_include_the_users_own_config_folder(tmp_path):
    search = own_folder(tmp_path)
    assert "my_l2" not in options("regularizer")
    assert {"my_l2", "l2", "dropout"} <= set(options("regularizer", [search]))
    with pytest.raises(ConfigError, match=r"regularizer=my_l2 is not an option; choose from"):
        check_group_choices(["regularizer=[l2,my_l2]"])
    check_group_choices(["regularizer=[l2,my_l2]", search])  # accepted with the folder


def test_a_typo_in_a_multi_select_list_names_the_options():
    with pytest.raises(ConfigError) as e:
        check_group_choices(["seed=1", "regularizer=[l2,dropuot]"])
    assert str(e.value).startswith("regularizer=dropuot is not an option; choose from [")
    assert "'dropout'" in str(e.value) and "\n" not in str(e.value)
    check_group_choices(["regularizer=l1,l2", "data=glob(*)", "trainer.max_epochs=3"])


def test_runs_write_under_the_folder_they_start_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg([], tmp_path / "out")
    assert Path(cfg.paths.root_dir) == tmp_path
    assert Path(cfg.paths.log_dir) == tmp_path / "logs"
    assert OmegaConf.select(cfg, "paths.data_dir") == str(tmp_path / "data")
