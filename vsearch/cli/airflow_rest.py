"""``vsearch airflow token`` and ``vsearch airflow backfill``: the running local Airflow
(``make airflow``) through its REST API, logged in with the home's admin password.

Airflow runs one backfill per DAG at a time; Airflow's own answer to a second one is a
409 (REST) or an ``AlreadyRunningBackfill`` traceback (``airflow backfill create``).
``vsearch airflow backfill`` says which backfill runs and how to cancel it instead.
"""

from __future__ import annotations

import configparser
import json
from typing import Any

import click

from vsearch.cli import Context
from vsearch.cli.airflow import ADMIN, DAG, airflow, airflow_home, pass_context


def running_api(ctx: Context) -> tuple[str, dict[str, str]]:
    """The running local Airflow's address and a bearer token for its REST API."""
    from vsearch.cli.service_process import http_json

    home = airflow_home(ctx)
    cfg = configparser.ConfigParser(interpolation=None)
    if not cfg.read(home / "airflow.cfg"):
        raise click.ClickException(
            f"no local Airflow at {home}: start one with `make airflow` (same VSEARCH_DATA_DIR)"
        )
    base = f"http://127.0.0.1:{cfg.get('api', 'port')}"
    password = json.loads((home / "passwords.json").read_text())[ADMIN]
    try:
        status, body = http_json("POST", f"{base}/auth/token",
                                 {"username": ADMIN, "password": password})  # fmt: skip
    except OSError as e:
        raise click.ClickException(f"the local Airflow at {base} is not running ({e})") from e
    if status not in (200, 201):
        raise click.ClickException(f"login to {base} failed ({status}): {body}")
    return base, {"Authorization": f"Bearer {body['access_token']}"}


@airflow.command("token")
@pass_context
def token_command(ctx: Context) -> None:
    """Print a bearer token for the running local Airflow's REST API (POST /auth/token
    with the printed login does the same): `curl -H "Authorization: Bearer $TOKEN" …`."""
    _, auth = running_api(ctx)
    click.echo(auth["Authorization"].removeprefix("Bearer "))


@airflow.command("backfill")
@click.argument("from_date", required=False)
@click.argument("to_date", required=False)
@click.option("--conf", "conf", default="{}", help="The runs' config, as JSON.")
@click.option("--dag", default=DAG, show_default=True)
@click.option("--rerun", type=click.Choice(["none", "failed", "completed"]), default="none",
              show_default=True, help="Which dates that already ran to run again.")  # fmt: skip
@click.option("--cancel", is_flag=True, help="Cancel the DAG's running backfill.")
@pass_context
def backfill(ctx: Context, from_date: str | None, to_date: str | None, conf: str, dag: str,
             rerun: str, cancel: bool) -> None:  # fmt: skip
    """Backfill FROM_DATE..TO_DATE (inclusive) through the running local Airflow.

    Airflow runs one backfill per DAG at a time: while one runs, this says which and
    how to cancel it (`--cancel`).
    """
    from vsearch.cli.service_process import http_json

    base, auth = running_api(ctx)
    if cancel:
        running = _running_backfill(base, auth, dag)
        if running is None:
            raise click.ClickException(f"no backfill of {dag} is running")
        status, body = http_json("PUT", f"{base}/api/v2/backfills/{running['id']}/cancel",
                                 None, auth)  # fmt: skip
        if status != 200:
            raise click.ClickException(f"cancel failed ({status}): {body}")
        click.echo(f"cancelled backfill {running['id']} of {dag}")
        return
    if not (from_date and to_date):
        raise click.UsageError("FROM_DATE and TO_DATE are required (or --cancel)")
    try:
        run_conf = json.loads(conf)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--conf") from e
    request = {"dag_id": dag, "from_date": _utc(from_date), "to_date": _utc(to_date),
               "dag_run_conf": run_conf, "reprocess_behavior": rerun}  # fmt: skip
    status, body = http_json("POST", f"{base}/api/v2/backfills", request, auth)
    if status == 409:
        running = _running_backfill(base, auth, dag)
        what = (f"backfill {running['id']} ({running['from_date'][:10]} to "
                f"{running['to_date'][:10]})" if running else "a backfill")  # fmt: skip
        raise click.ClickException(
            f"{what} of {dag} is still running, and Airflow runs one backfill per DAG at a "
            f"time: wait for it to finish, or cancel it with `vsearch airflow backfill "
            f"--cancel`"
        )
    if status != 200:
        raise click.ClickException(f"backfill refused ({status}): {body.get('detail', body)}")
    click.echo(f"backfill {body['id']} of {dag}: {from_date} to {to_date} (see the UI)")


def _running_backfill(base: str, auth: dict[str, str], dag: str) -> dict[str, Any] | None:
    from vsearch.cli.service_process import http_json

    status, body = http_json("GET", f"{base}/api/v2/backfills?dag_id={dag}&limit=100", None, auth)
    if status != 200:
        return None
    running = [b for b in body.get("backfills", []) if not b.get("completed_at")]
    return running[-1] if running else None


def _utc(date: str) -> str:
    """A date or datetime as the REST API wants it (with a zone; UTC when none is given)."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(date)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
