"""Run inside the environment a compose Airflow container gets (tests/deploy/test_commands.py).

    python -m tests.deploy.airflow_probe REQUEST.json RESULT.json

Builds the real ``airflow`` CLI parser under that configuration (the executor and the auth
manager add their own commands) and reports, for each argv asked about, whether it parses and
whether the function it would run imports; which ``[section] key`` options Airflow does not
know; and what the DagBag's tasks need (queues, pools, connection ids).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def import_string(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_argv(parser: Any, argv: list[str]) -> str:
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as e:
        return f"does not parse (argparse exit {e.code})"
    cells = [c.cell_contents for c in (namespace.func.__closure__ or ())]
    paths = [c for c in cells if isinstance(c, str) and "." in c]
    try:
        for path in paths:
            import_string(path)
    except Exception as e:
        return f"parses, but {paths} does not import: {e!r}"
    return "ok"


def load_components() -> dict[str, str]:
    """Import what the scheduler, api-server and workers load at start: the executor (and with
    it the Celery app the worker health check pings) and the auth manager."""
    from airflow.api_fastapi.app import get_auth_manager_cls
    from airflow.executors.executor_loader import ExecutorLoader

    loaders = {
        "executor": lambda: ExecutorLoader.import_default_executor_cls()[0],
        "celery_app": lambda: import_string(
            "airflow.providers.celery.executors.celery_executor.app"
        ),
        "auth_manager": get_auth_manager_cls,
    }
    outcome = {}
    for name, load in loaders.items():
        try:
            loaded = load()
            outcome[name] = f"ok: {getattr(loaded, '__name__', type(loaded).__name__)}"
        except Exception as e:
            outcome[name] = f"failed: {e!r}"
    return outcome


def unknown_options(options: list[list[str]]) -> list[str]:
    from airflow.configuration import conf

    described = conf.configuration_description
    return [
        f"[{section}] {key}"
        for section, key in options
        if key not in described.get(section, {}).get("options", {})
    ]


def dag_needs() -> dict[str, Any]:
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import BundleDagBag

    # As the DAG processor parses the dags-folder bundle: the folder on sys.path.
    folder = conf.get("core", "dags_folder")
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder)
    queues, pools, conn_params = set(), set(), set()
    for dag in bag.dags.values():
        for task in dag.tasks:
            queues.add(task.queue)
            pools.add(task.pool)
        for name, value in dag.params.dump().items():
            if name.endswith("conn_id"):
                conn_params.add(str(value))
    return {
        "dag_ids": sorted(bag.dags),
        "import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
        "queues": sorted(queues),
        "pools": sorted(pools),
        "conn_ids": sorted(conn_params),
        "default_queue": conf.get("operators", "default_queue"),
    }


def store_hook_conn_id() -> str:
    from vsearch_airflow.hooks import VsearchStoreHook

    return str(VsearchStoreHook.default_conn_name)


def main(request_path: str, result_path: str) -> int:
    with open(request_path) as f:
        request = json.load(f)
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    result = {
        "argv": {" ".join(a): check_argv(parser, a) for a in request["argvs"]},
        "unknown_options": unknown_options(request["options"]),
        "components": load_components(),
        "dags": dag_needs(),
        "store_hook_conn_id": store_hook_conn_id(),
    }
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
