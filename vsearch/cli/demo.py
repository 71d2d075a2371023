"""``vsearch demo``: the main job end to end on embedded defaults (what ``make demo`` runs).

Sample pictures -> the build DAG through real Airflow (``airflow dags test``, SQLite
metadata DB; every stage for real) -> the query service (its real server on a free loopback
port) on the published snapshot -> an image query, an upsert, a search that finds it, a
delete and a search that no longer does. Everything lands in one directory; no server
to set up and nothing downloaded. Each step prints as it happens.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)

# Answers (status, JSON body) to (method, path, body, headers): HTTP or a Flask test client.
Call = Callable[..., tuple[int, Any]]
DEMO_DATE = "2026-01-01"


def exercise_service(
    call: Call, api_key: str, image: bytes | None, say: Callable[[str], object]
) -> dict[str, Any]:
    """Query (an image if given and the service can embed it, else a vector), upsert,
    find it, delete, and check it is gone; ``say`` each step; return the answers."""
    import numpy as np

    key = {"X-API-Key": api_key}
    status, ready = call("GET", "/readyz")
    if status != 200:
        raise click.ClickException(f"the service is not ready: {ready}")
    dim = int(call("GET", "/v1/manifest")[1]["encoder"]["dim"])
    say(f"ready: serving {ready['snapshot_id']} (dim {dim})")
    results: dict[str, Any] = {"query": _first_query(call, image, dim, say)}
    x = np.random.default_rng(7).standard_normal(dim).astype("float32")
    new_id = 2**62 + 12345
    item = {"id": new_id, "vector": x.tolist(), "metadata": {"caption": "added by the demo"}}
    status, body = call("PUT", "/v1/items", {"items": [item]}, key)
    results["upsert"] = body
    say(f"upsert {new_id}: HTTP {status}, log entry {body.get('last_id') if body else None}")
    status, body = call("POST", "/v1/search", {"vector": x.tolist(), "k": 3})
    results["after_upsert"] = body
    top = body["hits"][0] if status == 200 and body["hits"] else None
    say(f"search for it: top hit {top}")
    status, body = call("POST", "/v1/items/delete", {"ids": [new_id]}, key)
    results["delete"] = body
    say(f"delete {new_id}: HTTP {status}")
    status, body = call("POST", "/v1/search", {"vector": x.tolist(), "k": 3})
    results["after_delete"] = body
    gone = status == 200 and all(h["id"] != new_id for h in body["hits"])
    say(
        f"search again: {'gone' if gone else 'STILL THERE'} (top {[h['id'] for h in body['hits']]})"
    )
    results["found_then_gone"] = bool(
        top and top["id"] == new_id and top["source"] == "delta" and gone
    )
    return results


def _first_query(call: Call, image: bytes | None, dim: int, say: Callable[[str], object]) -> Any:
    import numpy as np

    if image is not None:
        payload = {"image": base64.b64encode(image).decode(), "k": 5}
        status, body = call("POST", "/v1/search", payload)
        if status == 200:
            say(f"image query: {_brief(body['hits'])} in {body['took_ms']} ms")
            return body
        reason = body["error"]["message"] if body and "error" in body else status
        say(f"image query not possible here ({reason}); using a vector")
    q = np.random.default_rng(3).standard_normal(dim).astype("float32")
    status, body = call("POST", "/v1/search", {"vector": q.tolist(), "k": 5})
    if status != 200:
        raise click.ClickException(f"vector query failed: HTTP {status} {body}")
    say(f"vector query: hits {_brief(body['hits'])} in {body['took_ms']} ms")
    return body


def _brief(hits: list[dict[str, Any]]) -> list[tuple[Any, float]]:
    """(item key, or id when the item has no key, and score) of each hit."""
    return [((h.get("metadata") or {}).get("key", h["id"]), round(h["score"], 3)) for h in hits]


def airflow_env(root: Path, repo: Path) -> dict[str, str]:
    """Airflow on embedded defaults under ``root``, with this project's DAGs and plugins."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(repo / "plugins"), str(repo)]),
    }


def run_dag(env: Mapping[str, str], conf: str, log_path: Path) -> str:
    """``airflow dags test`` of the build DAG, printing each task as it ends; the run's state."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    cmd = [airflow, "dags", "test", "vsearch_build_index", DEMO_DATE, "-c", conf]
    state = "unknown"
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "[DAG TEST] end task" in line:
                task = line.split("task_id=", 1)[1].split()[0]
                index = line.split("map_index=", 1)[1].split()[0] if "map_index=" in line else ""
                click.echo(f"  done: {task}" + (f" [{index}]" if index not in ("", "-1") else ""))
            if "DagRun Finished:" in line:
                state = line.split("state=", 1)[1].split(",", 1)[0]
    return state


@click.command()
@click.option(
    "--dir",
    "demo_dir",
    default="demo-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where everything lands.",
)
@click.option("--images", type=int, default=200, show_default=True, help="Sample pictures.")
@click.option(
    "--serve/--no-serve",
    default=None,
    help="Keep the service up at the end, for its search page, until Ctrl-C "
    "(default: when run from a terminal).",
)
@pass_context
def demo(ctx: Context, demo_dir: Path, images: int, serve: bool | None) -> None:
    """The main job end to end on embedded defaults, in DIR (see docs: README, make demo)."""
    from vsearch.catalog import list_snapshots, read_pointer
    from vsearch.cli.service_process import http_json, running_service, settings_env
    from vsearch.config import Settings
    from vsearch.sources.samples import write_sample_images
    from vsearch.storage import open_store

    root = demo_dir.resolve()
    repo = Path(__file__).resolve().parents[2]
    root.mkdir(parents=True, exist_ok=True)
    # The query encoder is left to its default: the one the snapshot was built with.
    settings = Settings.load(environ={}, data_dir=str(root), api_key=secrets.token_hex(16))
    env = {**airflow_env(root, repo), **settings_env(settings)}

    step(f"1/4 sample images: {images} generated pictures in 8 classes -> {root / 'images'}")
    paths = write_sample_images(root / "images", images)
    click.echo(f"wrote {len(paths)} JPEGs, e.g. {paths[0].name}")

    step(f"2/4 Airflow: SQLite metadata DB in {root / 'airflow'}")
    migrate_log = root / "airflow-migrate.log"
    airflow = str(Path(sys.executable).with_name("airflow"))
    with open(migrate_log, "w") as log:
        if subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=log).returncode:
            raise click.ClickException(f"airflow db migrate failed: see {migrate_log}")
    click.echo(f"migrated (log: {migrate_log})")

    step(f"3/4 Airflow: airflow dags test vsearch_build_index {DEMO_DATE} (every task for real)")
    conf = f'{{"sources": ["{root / "images"}"], "partition_size": 100, "nshards": 2}}'
    state = run_dag(env, conf, root / "dag-run.log")
    click.echo(f"run state: {state} (full log: {root / 'dag-run.log'})")
    if state != "success":
        raise click.ClickException(f"the DAG run ended {state}: see {root / 'dag-run.log'}")
    store = open_store(settings=settings)
    current = read_pointer(store)
    for sid in list_snapshots(store):
        click.echo(f"{'*' if current and current[0].snapshot_id == sid else ' '} {sid}")

    step("4/4 query service on the published snapshot: image query, upsert, search, delete")
    image = sorted((root / "images").rglob("*.jpg"))[0]
    click.echo(f"query image: {image.relative_to(root)}")
    with running_service(settings_env(settings), log_path=root / "service.log") as base:
        click.echo(f"service: {base} (python -m service.server)")
        results = exercise_service(
            lambda method, path, body=None, headers=None: http_json(
                method, base + path, body, headers
            ),
            settings.api_key, image.read_bytes(), click.echo,
        )  # fmt: skip
        if not results["found_then_gone"]:
            raise click.ClickException("the service demo failed: see the lines above")
        click.echo(
            f"\nDone. Store: {root / 'store'}  ·  inspect: vsearch --data-dir {root} manifest list"
        )
        if serve if serve is not None else sys.stdin.isatty():
            click.echo(f"\nSearch page: {base}/  (open it and drop in a photo; Ctrl-C stops)")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            return
    click.echo(f"Search page: vsearch --data-dir {root} serve, then open http://127.0.0.1:8000/")


def step(title: str) -> None:
    click.echo(f"\n== {title}")


COMMANDS = [demo]
