"""Airflow set-up shared by ``vsearch airflow`` (a local Airflow) and the compose stack's
one-shot ``airflow-init`` (``docker/scripts/airflow_init.py``).

``init_steps`` are idempotent ``airflow`` commands: migrate the metadata DB, the admin
user (only where the FAB auth manager is used: the compose stack), the object-store
connection (``vsearch_store``, written from the same ``VSEARCH_*`` settings the rest of
vsearch reads) and the GPU pool, sized by ``VSEARCH_GPU_POOL_SLOTS``. Without that pool
the scheduler never runs the embedding and training tasks ("Tasks using non-existent
pool 'gpu' will not be scheduled"). This module runs the ``airflow`` CLI; it imports
nothing of Airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vsearch.config import Settings

DEFAULT_CONN_ID = "vsearch_store"


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
        "description": "vsearch object store (written by airflow init from VSEARCH_* settings)",
        "extra": json.dumps(extra),
    }
    # Without keys, the amazon provider falls back to boto3's chain (instance role etc.).
    if env.get("AWS_ACCESS_KEY_ID"):
        conn["login"] = env["AWS_ACCESS_KEY_ID"]
        conn["password"] = env.get("AWS_SECRET_ACCESS_KEY", "")
    return conn


def init_steps(
    settings: Settings,
    connections_file: str,
    *,
    admin: Mapping[str, str] | None = None,
    airflow: str = "airflow",
) -> list[Step]:
    """The commands, in order; ``admin`` ({username, password, email}) adds a FAB user."""
    steps = [Step("migrate the metadata database", [airflow, "db", "migrate"])]
    if admin is not None:
        flags = {
            "--username": admin["username"],
            "--password": admin["password"],
            "--email": admin["email"],
            "--firstname": "vsearch",
            "--lastname": "admin",
            "--role": "Admin",
        }
        steps.append(Step(
            "create the admin user (kept if it exists)",
            [airflow, "users", "create", *(word for pair in flags.items() for word in pair)],
        ))  # fmt: skip
    steps.append(Step(
        "write the object-store connection",
        [airflow, "connections", "import", connections_file, "--overwrite"],
    ))  # fmt: skip
    steps.append(Step(
        f"set the {settings.gpu_pool} pool ({settings.gpu_pool_slots} slots)",
        [airflow, "pools", "set", settings.gpu_pool, str(settings.gpu_pool_slots),
         "GPU tasks (embedding, training): one slot per GPU"],
    ))  # fmt: skip
    return steps


def run_init(
    settings: Settings,
    env: Mapping[str, str],
    *,
    conn_id: str = DEFAULT_CONN_ID,
    admin: Mapping[str, str] | None = None,
    airflow: str = "airflow",
    command_env: Mapping[str, str] | None = None,
    say: Callable[[str], object] = print,
) -> int:
    """Run ``init_steps`` (in ``command_env``, default this process's environment); stop
    at the first that fails and return its exit code. ``env`` supplies AWS keys."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "connections.json")
        # The file may hold the store's secret key: readable by this user only, gone on exit.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({conn_id: store_connection(settings, env)}, f)
        for step in init_steps(settings, path, admin=admin, airflow=airflow):
            say(f"airflow init: {step.name}")
            if command_env is None:
                done = subprocess.run(step.argv, check=False)
            else:
                done = subprocess.run(step.argv, check=False, env=dict(command_env))
            if done.returncode != 0:
                say(f"airflow init: failed ({done.returncode}): {step.name}")
                return done.returncode
    say("airflow init: done")
    return 0
