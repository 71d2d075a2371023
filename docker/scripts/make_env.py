"""Print docker/.env.example with every secret replaced by a fresh random value.

    python3 docker/scripts/make_env.py > docker/.env

Standard library only, so it runs before anything is installed. Values are URL-safe
(letters, digits, '-', '_'): several of them end up inside connection URLs.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _token(nbytes: int) -> Callable[[], str]:
    return lambda: secrets.token_urlsafe(nbytes)


SECRETS: dict[str, Callable[[], str]] = {
    "POSTGRES_PASSWORD": _token(24),
    "REDIS_PASSWORD": _token(24),
    "MINIO_ROOT_PASSWORD": _token(24),
    "AIRFLOW_FERNET_KEY": _fernet_key,
    "AIRFLOW_API_SECRET_KEY": _token(32),
    # HS512 wants a key at least as long as its 64-byte digest.
    "AIRFLOW_JWT_SECRET": _token(64),
    "AIRFLOW_ADMIN_PASSWORD": _token(18),
    "VSEARCH_API_KEY": _token(32),
}

_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def render(example: str) -> str:
    """``example`` with the value of every name in SECRETS regenerated."""
    seen: set[str] = set()
    lines = []
    for line in example.splitlines():
        m = _ASSIGNMENT.match(line)
        if m and m.group(1) in SECRETS:
            seen.add(m.group(1))
            line = f"{m.group(1)}={SECRETS[m.group(1)]()}"
        lines.append(line)
    missing = sorted(set(SECRETS) - seen)
    if missing:
        raise SystemExit(f"{EXAMPLE} lacks {missing}")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render(EXAMPLE.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
