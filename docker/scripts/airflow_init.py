"""One-shot Airflow initialisation for the compose stack (the airflow-init service).

The same idempotent steps as ``vsearch airflow init`` (``vsearch/airflow_setup/init_steps.py``),
plus the admin user of the FAB auth manager the stack uses:

1. ``airflow db migrate`` — Airflow's tables, and the FAB auth manager's with them;
2. the admin user, from ``AIRFLOW_ADMIN_USERNAME`` / ``_PASSWORD`` / ``_EMAIL``;
3. the object-store connection (``AIRFLOW_STORE_CONN_ID``, default ``vsearch_store``; type
   ``aws``, ``endpoint_url`` in extras) from the same ``VSEARCH_*`` settings and AWS keys
   the rest of the stack uses, so nobody types it into the UI;
4. the ``gpu`` pool, ``AIRFLOW_GPU_POOL_SLOTS`` slots (one per GPU across the gpu workers;
   ``VSEARCH_GPU_POOL_SLOTS`` works too).

Idempotent: a second run migrates nothing, keeps the existing admin (and its password: change
that in the UI), rewrites the connection from the environment and resets the pool's slots.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping

from vsearch.airflow_setup.init_steps import (
    DEFAULT_CONN_ID,
    Step,
    init_steps,
    run_init,
    store_connection,
)
from vsearch.config import Settings

GPU_POOL = Settings().gpu_pool
__all__ = ["DEFAULT_CONN_ID", "GPU_POOL", "main", "steps", "store_connection"]


def _settings(env: Mapping[str, str]) -> Settings:
    slots = env.get("AIRFLOW_GPU_POOL_SLOTS", "1")
    if not slots.isdigit():
        raise SystemExit(f"airflow-init: AIRFLOW_GPU_POOL_SLOTS must be an integer, got {slots!r}")
    settings = Settings.load(env)
    if "VSEARCH_GPU_POOL_SLOTS" not in env:
        settings = dataclasses.replace(settings, gpu_pool_slots=int(slots))
    return settings


def _admin(env: Mapping[str, str]) -> dict[str, str]:
    def need(name: str) -> str:
        if not env.get(name):
            raise SystemExit(f"airflow-init: {name} must be set (see docker/.env.example)")
        return env[name]

    return {
        "username": need("AIRFLOW_ADMIN_USERNAME"),
        "password": need("AIRFLOW_ADMIN_PASSWORD"),
        "email": need("AIRFLOW_ADMIN_EMAIL"),
    }


def steps(env: Mapping[str, str], connections_file: str) -> list[Step]:
    return init_steps(_settings(env), connections_file, admin=_admin(env))


def main() -> int:
    env = dict(os.environ)
    conn_id = env.get("AIRFLOW_STORE_CONN_ID") or DEFAULT_CONN_ID
    code = run_init(_settings(env), env, conn_id=conn_id, admin=_admin(env),
                    say=lambda line: print(line.replace("airflow init", "airflow-init"),
                                           flush=True))  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())
