"""Where reglab's own files are: the repository root of the editable install and its ``conf/``."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT_DIR = PACKAGE_DIR.parents[1]  # the repository root of an editable (src layout) install
CONF_DIR = ROOT_DIR / "conf"
