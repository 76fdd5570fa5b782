"""The lower bounds of pyproject.toml's dependencies (extras included), as pip constraints.

    python .ci/lower_bounds.py > lowest.txt      # name==lower bound, one a line
    python .ci/lower_bounds.py --check           # fails unless each is installed at its bound

`pip install -c lowest.txt -e ".[dev]"` then installs every direct dependency at its lower bound
(pip's --resolution lowest-direct), with the newest transitive dependencies that fit them.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
BOUND = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?:>=|==)\s*([0-9][0-9A-Za-z.]*)")


def lower_bounds(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """``{distribution: lower bound}`` of every direct requirement; the project's own extras
    (``reglab[slurm]``) are not requirements of their own."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    out = {}
    for req in reqs:
        if req.startswith(project["name"] + "["):
            continue
        match = BOUND.match(req)
        if match is None:
            raise SystemExit(f"lower_bounds: {req!r} has no lower bound (>= or ==)")
        out[match[1]] = match[2]
    return out


def release(version: str) -> tuple[int, ...]:
    """``2.13.0+cpu`` and ``2.13`` -> (2, 13, 0): the local label and trailing zeros aside."""
    parts = [int(p) for p in re.findall(r"\d+", version.split("+")[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def main() -> None:
    bounds = lower_bounds()
    if sys.argv[1:] != ["--check"]:
        print("\n".join(f"{name}=={version}" for name, version in bounds.items()))
        return
    wrong = []
    for name, version in bounds.items():
        got = metadata.version(name)
        print(f"{name:28} lower bound {version:10} installed {got}")
        if release(got) != release(version):
            wrong.append(name)
    if wrong:
        raise SystemExit(f"lower_bounds: not installed at the lower bound: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
