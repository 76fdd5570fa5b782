"""What every console script does before Hydra composes its config.

- registers reglab's OmegaConf resolvers (``reglab_root``, the folder the command runs in; the run
  folder's name; ``reglab_new_dir``, which makes each run or sweep folder, so that two started in
  the same second never share one);
- loads ``.env`` (W&B settings) before composing, so configs may read ``oc.env``;
- refuses ``group=option`` overrides naming an option that is not on Hydra's config search path
  (reglab's ``conf/`` plus any ``hydra.searchpath`` folder), in one line;
- refuses a launcher whose extra is not installed, naming it (``pip install 'reglab[slurm]'``);
- ``resume=true``: finds the newest earlier run of the same command and hands its folder to Hydra
  as ``hydra.run.dir``, before Hydra creates a new folder; the run then picks up that folder's
  ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from omegaconf import OmegaConf

from reglab.core.config import run_name
from reglab.core.errors import ConfigError, ReglabError, fail, require_extra
from reglab.core.io import make_new_dir
from reglab.core.paths import CONF_PACKAGE
from reglab.core.plan import BASELINE
from reglab.training.loggers import load_env_file

# False while resume=true looks for the runs folder: composing then must not make a folder.
_MAKE_FOLDERS = True


def new_dir(path: str) -> str:
    """The ``reglab_new_dir`` resolver: ``reglab.core.io.make_new_dir``, except while
    resume=true composes the command only to find its runs folder. Registered with
    ``use_cache``: a config resolves it once, and Hydra hands that value to every job of a sweep
    (also to SLURM jobs and their requeued attempts, which unpickle the config with its cache)."""
    return make_new_dir(path) if _MAKE_FOLDERS else str(path)


def launch_dir() -> str:
    """The ``reglab_root`` resolver (``paths.root_dir``): the folder the command runs in. A job
    reads Hydra's ``runtime.cwd``, so ``hydra.job.chdir=true`` does not move ``data/`` and
    ``logs/`` into the run folder."""
    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


# Hydra instantiates the sweeper's sampler before any reglab code runs: QMCSampler is
# "experimental" in Optuna's sense only, and its warning would open every comparison.
warnings.filterwarnings("ignore", message=r".* is experimental \(supported from")

if not OmegaConf.has_resolver("reglab_root"):
    OmegaConf.register_new_resolver("reglab_root", launch_dir)
    OmegaConf.register_new_resolver("reglab_run_name", lambda *, _root_: run_name(_root_))
    OmegaConf.register_new_resolver("reglab_new_dir", new_dir, use_cache=True)


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def task_overrides(argv: list[str]) -> list[str]:
    """The task overrides of a command line: ``key=value`` words, not flags, not ``hydra.*``."""
    return [
        a
        for a in argv
        if "=" in a and not a.startswith("-") and not _key_of(a).startswith("hydra.")
    ]


def search_path_overrides(argv: Sequence[str]) -> list[str]:
    """The ``hydra.searchpath=[...]`` words of a command line: the user's own config folders."""
    return [a for a in argv if _key_of(a) == "hydra.searchpath"]


def options(group: str, overrides: Sequence[str] = (), config_name: str = "train") -> list[str]:
    """The options of a config group, as Hydra finds them: reglab's ``conf/`` plus the folders of
    ``hydra.searchpath`` (in ``overrides`` or in the primary config), less ``_``-prefixed shared
    parts. Empty for a name that is no group."""
    search = search_path_overrides(overrides)
    outside = not GlobalHydra.instance().is_initialized()  # inside a Hydra app: its search path
    with initialize_config_module(CONF_PACKAGE, version_base="1.3") if outside else nullcontext():
        loader = GlobalHydra.instance().config_loader()
        names = loader.get_group_options(group, ObjectType.CONFIG, config_name, search)
    return sorted(n for n in names if not n.startswith("_"))


def register_techniques(
    overrides: Sequence[str] = (), config_name: str = "train"
) -> dict[str, tuple[str, str]]:
    """The ``technique`` group, for plain sweeps over one technique at a time (a basic Hydra sweep
    is a cartesian product, so "the baseline plus each technique alone" cannot be written over
    the two multi-select groups; ``+technique=baseline,l2,mixup`` can). One option per option of
    ``regularizer`` and ``augmentation`` on Hydra's search path, your own folders included.
    Returns ``{option: (group, name)}``."""
    store = ConfigStore.instance()
    store.store(group="technique", name=BASELINE, node={}, package="_global_")
    out: dict[str, tuple[str, str]] = {}
    for group in ("regularizer", "augmentation"):
        for name in options(group, overrides, config_name):
            if name != "none":
                option = name if name not in out else f"{group}_{name}"
                out[option] = (group, name)
                node = {"defaults": [{f"override /{group}": [name]}]}
                store.store(group="technique", name=option, node=node, package="_global_")
    return out


def check_group_choices(overrides: list[str], config_name: str = "train") -> None:
    """Refuse ``group=option`` overrides naming an option Hydra cannot find, in one line.

    Hydra refuses them too, but for a multi-select list (``regularizer=[l2,dropuot]``) its
    message does not list the options. Sweep syntax (``a,b``) is split; functions such as
    ``choice(...)`` or ``glob(*)`` are left to Hydra. ``hydra.searchpath=[...]`` among
    ``overrides`` adds its folders' options.
    """
    search = search_path_overrides(overrides)
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if "/" in group or "." in group or group == "hydra" or any(c in value for c in "()*$"):
            continue
        available = options(group, search, config_name)
        if not available:  # a plain key (seed=1), not a group
            continue
        for name in value.replace("[", ",").replace("]", ",").split(","):
            name = name.strip().strip("'\"")
            if name and name != "null" and name not in available:
                raise ConfigError(f"{group}={name} is not an option; choose from {available}")


# Launchers of the slurm extra (hydra-submitit-launcher): without it Hydra would report a missing
# config group, not the package to install.
SUBMITIT_LAUNCHERS = {"slurm", "slurm_local", "submitit_slurm", "submitit_local"}


def check_extras(argv: list[str]) -> None:
    """Refuse, in one line naming the extra to install, a launcher whose plugin is missing."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and value in SUBMITIT_LAUNCHERS:
            require_extra("hydra_plugins.hydra_submitit_launcher", "slurm", arg)


# ----------------------------------------------------------------------------- resume=true


def _same_command(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if _key_of(o) != "resume")


def previous_run(overrides: list[str], runs_root: Path) -> Path | None:
    """The newest folder under ``runs_root`` whose saved overrides equal ``overrides``
    (``resume=...`` aside on both sides)."""
    want, found = _same_command(overrides), []
    for saved in Path(runs_root).glob("*/.hydra/overrides.yaml"):
        try:
            got = [str(o) for o in OmegaConf.load(saved)]
        except Exception:  # noqa: BLE001 - an unreadable folder is not the run we look for
            continue
        if _same_command(got) == want:
            found.append(saved)
    newest = max(found, key=lambda p: p.stat().st_mtime, default=None)
    return newest.parent.parent if newest is not None else None


def runs_root_of(overrides: list[str]) -> Path | None:
    """The folder that holds single runs for this command: the parent of ``hydra.run.dir``."""
    global _MAKE_FOLDERS
    _MAKE_FOLDERS = False
    try:
        with initialize_config_module(CONF_PACKAGE, version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
            return Path(str(cfg.hydra.run.dir)).parent
    except Exception:  # noqa: BLE001 - a bad override: let Hydra's own run report it
        return None
    finally:
        _MAKE_FOLDERS = True


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` plus ``hydra.run.dir=<previous run>`` when it asks for ``resume=true``."""
    overrides = task_overrides(argv)
    wants = any(_key_of(o) == "resume" and o.split("=", 1)[1].lower() == "true" for o in overrides)
    multirun = "-m" in argv or "--multirun" in argv
    explicit = any(_key_of(a) == "hydra.run.dir" for a in argv if "=" in a)
    if not wants or multirun or explicit or any(a in argv for a in ("--help", "-h", "--cfg", "-c")):
        return argv
    root = runs_root_of([*overrides, *search_path_overrides(argv)])
    if root is None:
        return argv
    folder = previous_run(overrides, root)
    if folder is None:
        print(
            f"reglab: resume=true: no earlier run of this command under {root}; starting a new one",
            file=sys.stderr,
        )
        return argv
    print(f"reglab: resume=true: continuing {folder}", file=sys.stderr)
    # Quoted for Hydra's override grammar, so any character in the folder name is safe.
    return [*argv, f"hydra.run.dir='{folder}'"]


def entry_point(main, config_name: str = "train", resume: bool = False):
    """Wrap a Hydra main of primary config ``config_name``: ``.env``, the check of group options,
    and (``resume``) resume=true."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        load_env_file()
        if not args and not kwargs:  # called as a console script: argv is the command line
            try:
                check_extras(sys.argv[1:])
                register_techniques(search_path_overrides(sys.argv[1:]), config_name)
                check_group_choices(
                    [*task_overrides(sys.argv[1:]), *search_path_overrides(sys.argv[1:])],
                    config_name,
                )
            except ReglabError as e:
                fail(str(e))
            if resume:
                sys.argv[1:] = resume_argv(sys.argv[1:])
        return main(*args, **kwargs)

    return wrapper
