"""One-shot Airflow initialisation for the compose stack (the airflow-init service).

1. ``airflow db migrate`` — Airflow's tables, and the FAB auth manager's with them;
2. the admin user (FAB auth manager), from ``AIRFLOW_ADMIN_USERNAME`` / ``_PASSWORD`` / ``_EMAIL``;
3. the object-store connection (``AIRFLOW_STORE_CONN_ID``, default ``vsearch_store``; type
   ``aws``, ``endpoint_url`` in extras) from the same ``VSEARCH_*`` settings and AWS keys
   the rest of the stack uses, so nobody types it into the UI;
4. the ``gpu`` pool, ``AIRFLOW_GPU_POOL_SLOTS`` slots (one per GPU across the gpu workers).

Idempotent: a second run migrates nothing, keeps the existing admin (and its password: change
that in the UI), rewrites the connection from the environment and resets the pool's slots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from vsearch.config import Settings

DEFAULT_CONN_ID = "vsearch_store"
GPU_POOL = "gpu"


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]


def store_connection(settings: Settings, env: Mapping[str, str]) -> dict[str, object]:
    """The Airflow connection (import-file form) for the store that ``settings`` names."""
    extra: dict[str, str] = {"store_url": settings.store}
    if settings.s3_endpoint_url:
        extra["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        extra["region_name"] = settings.s3_region
    conn: dict[str, object] = {
        "conn_type": "aws",
        "description": "vsearch object store (written by airflow-init from VSEARCH_* settings)",
        "extra": json.dumps(extra),
    }
    # Without keys, the amazon provider falls back to boto3's chain (instance role etc.).
    if env.get("AWS_ACCESS_KEY_ID"):
        conn["login"] = env["AWS_ACCESS_KEY_ID"]
        conn["password"] = env.get("AWS_SECRET_ACCESS_KEY", "")
    return conn


def steps(env: Mapping[str, str], connections_file: str) -> list[Step]:
    def need(name: str) -> str:
        if not env.get(name):
            raise SystemExit(f"airflow-init: {name} must be set (see docker/.env.example)")
        return env[name]

    slots = env.get("AIRFLOW_GPU_POOL_SLOTS", "1")
    if not slots.isdigit():
        raise SystemExit(f"airflow-init: AIRFLOW_GPU_POOL_SLOTS must be an integer, got {slots!r}")
    admin = {
        "--username": need("AIRFLOW_ADMIN_USERNAME"),
        "--password": need("AIRFLOW_ADMIN_PASSWORD"),
        "--email": need("AIRFLOW_ADMIN_EMAIL"),
        "--firstname": "vsearch",
        "--lastname": "admin",
        "--role": "Admin",
    }
    return [
        Step("migrate the metadata database", ["airflow", "db", "migrate"]),
        Step(
            "create the admin user (kept if it exists)",
            ["airflow", "users", "create", *(word for pair in admin.items() for word in pair)],
        ),
        Step(
            "write the object-store connection",
            ["airflow", "connections", "import", connections_file, "--overwrite"],
        ),
        Step(
            f"set the {GPU_POOL} pool",
            ["airflow", "pools", "set", GPU_POOL, slots, "GPU tasks: one slot per GPU"],
        ),
    ]


def main() -> int:
    env = dict(os.environ)
    settings = Settings.load(env)
    conn_id = env.get("AIRFLOW_STORE_CONN_ID") or DEFAULT_CONN_ID
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "connections.json")
        # The file holds the store's secret key: readable by this user only, gone on exit.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({conn_id: store_connection(settings, env)}, f)
        for step in steps(env, path):
            print(f"airflow-init: {step.name}", flush=True)
            done = subprocess.run(step.argv, check=False)
            if done.returncode != 0:
                print(f"airflow-init: failed ({done.returncode}): {step.name}", file=sys.stderr)
                return done.returncode
    print("airflow-init: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
