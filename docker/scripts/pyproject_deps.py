"""Print the requirements that pyproject.toml declares, one per line, for a cached image layer.

    pyproject_deps.py pyproject.toml [EXTRA ...]    the dependencies plus those extras
    pyproject_deps.py pyproject.toml --only EXTRA   that extra's requirements alone

The image installs these (with ``-c constraints.txt``) before it copies the source, so that
editing the source does not reinstall torch, faiss and Airflow. The project itself is then
installed with ``pip install -c constraints.txt ".[EXTRAS]"``, which finds everything in place.
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: dict[str, object], extras: list[str], only: bool = False) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    reqs = [] if only else list(project.get("dependencies", []))
    for extra in extras:
        reqs.extend(optional[extra])
    return reqs


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    path, rest = argv[0], argv[1:]
    only = rest[:1] == ["--only"]
    with open(path, "rb") as f:
        pyproject = tomllib.load(f)
    print("\n".join(requirements(pyproject, rest[1:] if only else rest, only)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
