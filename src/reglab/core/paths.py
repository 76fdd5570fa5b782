"""Where reglab's config is: the package ``reglab.conf``.

The source tree keeps the config groups at the top level, in ``conf/``; ``src/reglab/conf`` is a
symbolic link to it, so an editable install and an installed wheel (which holds a copy) read the
same files, the second from any folder. Hydra reads them as ``pkg://reglab.conf``; a user's own
folders join them through ``hydra.searchpath``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONF_PACKAGE = "reglab.conf"
CONF_SOURCE = f"pkg://{CONF_PACKAGE}"  # config_path of reglab's @hydra.main entry points
CONF_DIR = Path(str(files(CONF_PACKAGE))).resolve()  # the same files: conf/ in a checkout

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The source checkout's root, for its tests and its .env; meaningless in an installed wheel,
# which reads and writes under the folder it runs in (paths.root_dir).
ROOT_DIR = PACKAGE_DIR.parents[1]
