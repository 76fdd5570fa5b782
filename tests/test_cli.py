"""What every console script does before Hydra (reglab.cli): moved keys, option lists."""

import pytest

from reglab.cli import MOVED, check_group_choices, moved_keys, options
from reglab.core.errors import ConfigError

from .conftest import compose_cfg

VALUES = {"scheduler": "cosine", "scheduler.pct_start": "0.3",
          "execution.steps_per_execution": "2"}  # fmt: skip


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_every_moved_key_is_rewritten_with_a_note(old, new, capsys, tmp_path):
    value = VALUES.get(new, "true")
    argv = moved_keys(["seed=1", f"{old}={value}"])
    assert argv == ["seed=1", f"{new}={value}"]
    assert f"{old} is now {new}" in capsys.readouterr().err
    # The new key exists: the rewritten command composes, with the value where it belongs.
    extra = ["scheduler=onecycle"] if new == "scheduler.pct_start" else []
    cfg = compose_cfg([*extra, *argv], tmp_path)
    if new == "scheduler":
        assert cfg.scheduler._target_.endswith("CosineAnnealingLR")
    else:
        group, key = new.split(".")
        assert str(cfg[group][key]).lower() == value.lower()


def test_prefixes_and_other_keys_pass_through(capsys):
    assert moved_keys(["+model.tta=true", "model.widths=[8]", "-m"]) == [
        "+execution.tta=true", "model.widths=[8]", "-m"]  # fmt: skip
    assert capsys.readouterr().err.count("\n") == 1


def test_shared_base_files_are_not_options():
    assert "_base" not in options("data") and "_base" not in options("model")
    assert {"digits", "kmnist", "image_folder"} <= set(options("data"))
    with pytest.raises(ConfigError, match=r"data=_base is not an option"):
        check_group_choices(["data=_base"])
