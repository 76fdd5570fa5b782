"""``python -m reglab.report SWEEP_DIR``: the same as ``reglab-report``."""

import sys

from reglab.report.cli import main

sys.exit(main())
