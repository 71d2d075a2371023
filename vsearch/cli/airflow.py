"""``vsearch airflow``: a local Airflow 3 for this project, set up and started in one step.

``vsearch airflow up`` (what ``make airflow`` runs) starts the metadata database (a
PostgreSQL server of its own under the home: ``vsearch.airflow_setup.local_postgres``),
writes ``$AIRFLOW_HOME/airflow.cfg`` (default home: ``$VSEARCH_DATA_DIR/airflow``), runs
the idempotent init (migrations, the ``vsearch_store`` connection, the ``gpu`` pool) and
runs the API server (UI, on loopback unless ``VSEARCH_AIRFLOW_HOST`` says otherwise),
the scheduler (LocalExecutor), the DAG processor and the triggerer with this
environment's ``bin/`` on ``PATH`` (``vsearch.airflow_setup.supervisor``), until one
Ctrl-C or SIGTERM stops them all, then the database. ``VSEARCH_AIRFLOW_DB`` names
another database instead: a PostgreSQL server of your own, or SQLite (one process
writing at a time: no backfills while the scheduler runs).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vsearch.cli import Context

if TYPE_CHECKING:
    from vsearch.airflow_setup.local_postgres import LocalPostgres

pass_context = click.make_pass_decorator(Context)

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin"
SQLITE_ARGS = "sql_alchemy_connect_args = vsearch.airflow_setup.sqlite_args.CONNECT_ARGS"
DAG = "vsearch_build_index"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def airflow_home(ctx: Context) -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path(ctx.settings.data_dir) / "airflow").resolve()


def local_postgres(home: Path) -> LocalPostgres:
    from vsearch.airflow_setup.local_postgres import LocalPostgres

    return LocalPostgres(home / "postgres")


def database_url(home: Path) -> str:
    """``VSEARCH_AIRFLOW_DB``, else the home's own PostgreSQL server."""
    return os.environ.get("VSEARCH_AIRFLOW_DB") or local_postgres(home).url()


def config_text(home: Path, port: int, db: str, keys: dict[str, str], host: str) -> str:
    """The airflow.cfg of a local Airflow: this repository's DAGs and plugins, LocalExecutor.

    ``keys`` are the home's own secrets: every component must sign and check tokens with
    the same JWT secret (a component that makes up its own fails every task with
    "Invalid auth token"), and connections are stored encrypted with the Fernet key.
    """
    local = "127.0.0.1" if host in LOOPBACK else host
    shown = "localhost" if host in LOOPBACK else host
    return f"""# Written by `vsearch airflow init` (rewritten each time): set VSEARCH_* instead.
[core]
fernet_key = {keys["fernet_key"]}
dags_folder = {REPO / "dags"}
plugins_folder = {REPO / "plugins"}
executor = LocalExecutor
# Task processes the LocalExecutor may run at once (each holds a Python with Airflow).
parallelism = {max(4, os.cpu_count() or 1)}
load_examples = False
# A new DAG runs when triggered, without a trip to the UI to unpause it; scheduled runs of
# the build DAG skip themselves while no sources are configured (VSEARCH_SOURCES).
dags_are_paused_at_creation = False
execution_api_server_url = http://{local}:{port}/execution/
simple_auth_manager_users = {ADMIN}:admin
simple_auth_manager_passwords_file = {home / "passwords.json"}

[database]
sql_alchemy_conn = {db}
{SQLITE_ARGS if db.startswith("sqlite") else ""}

[api]
host = {host}
port = {port}
base_url = http://{shown}:{port}
secret_key = {keys["secret_key"]}

[api_auth]
jwt_secret = {keys["jwt_secret"]}
"""


def home_keys(home: Path) -> dict[str, str]:
    """The home's secrets, made once (``keys.json``, readable by this user only)."""
    import base64

    path = home / "keys.json"
    if not path.exists():
        keys = {
            "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "secret_key": secrets.token_urlsafe(24),
            "jwt_secret": secrets.token_urlsafe(64),  # HS512 wants a key of 64 bytes or more
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    return dict(json.loads(path.read_text()))


def environment(ctx: Context, home: Path) -> dict[str, str]:
    """The environment of every Airflow process (and of the `airflow` CLI beside them)."""
    bin_dir = str(Path(sys.executable).parent)
    store = ctx.settings.store
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # Tasks run in other processes and directories: every relative setting made absolute.
        "VSEARCH_DATA_DIR": str(Path(ctx.settings.data_dir).resolve()),
        "VSEARCH_STORE": store if "://" in store else str(Path(store).resolve()),
    }
    for name in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        env.pop(name, None)  # the config file names this repository's folders
    return env


def prepare(ctx: Context, port: int, host: str) -> tuple[Path, dict[str, str], str]:
    """Write the config and the login; return the home, the environment and the password."""
    home = airflow_home(ctx)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "airflow.cfg"
    cfg.write_text(config_text(home, port, database_url(home), home_keys(home), host))
    cfg.chmod(0o600)
    passwords = home / "passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    password = str(json.loads(passwords.read_text())[ADMIN])
    return home, environment(ctx, home), password


def run_init(ctx: Context, home: Path, env: dict[str, str]) -> None:
    from vsearch.airflow_setup.init_steps import run_init
    from vsearch.config import Settings

    airflow = str(Path(sys.executable).with_name("airflow"))
    if run_init(Settings.load(env), env, airflow=airflow, command_env=env, say=click.echo) != 0:
        raise click.ClickException(f"airflow init failed (AIRFLOW_HOME={home})")


def hold_home(home: Path) -> None:
    from vsearch.airflow_setup.supervisor import HomeInUse, claim

    try:
        claim(home)
    except HomeInUse as e:
        raise click.ClickException(str(e)) from None


def uses_local_postgres() -> bool:
    return not os.environ.get("VSEARCH_AIRFLOW_DB")


port_option = click.option("--port", type=int, default=8080, show_default=True,
                           envvar="VSEARCH_AIRFLOW_PORT",
                           help="The API server's (UI's) port.")  # fmt: skip
host_option = click.option("--host", default="127.0.0.1", show_default=True,
                           envvar="VSEARCH_AIRFLOW_HOST",
                           help="The address the API server (UI) binds: loopback unless you "
                                "mean to expose it.")  # fmt: skip


@click.group()
def airflow() -> None:
    """A local Airflow for the vsearch DAGs: `vsearch airflow up` (make airflow)."""


@airflow.command("init")
@port_option
@host_option
@pass_context
def init_command(ctx: Context, port: int, host: str) -> None:
    """Write airflow.cfg, migrate the DB, create the store connection and the gpu pool.

    Idempotent: run it again after changing VSEARCH_* settings. With the home's own
    PostgreSQL (the default), the server runs for the time of the init only.
    """
    from vsearch.airflow_setup.local_postgres import stop

    hold_home(airflow_home(ctx))
    home, env, _ = prepare(ctx, port, host)
    server = local_postgres(home).start(env) if uses_local_postgres() else None
    try:
        run_init(ctx, home, env)
    finally:
        if server is not None:
            stop(server)
    click.echo(f"AIRFLOW_HOME={home}")


@airflow.command("up")
@port_option
@host_option
@pass_context
def up(ctx: Context, port: int, host: str) -> None:
    """Init, then run Airflow (API server + UI, scheduler, DAG processor, triggerer) until
    one Ctrl-C or SIGTERM stops every part of it."""
    from vsearch.airflow_setup.local_postgres import stop
    from vsearch.airflow_setup.supervisor import StopRequest, Supervisor

    hold_home(airflow_home(ctx))
    request = StopRequest()  # from here on, a signal asks for an orderly stop
    home, env, password = prepare(ctx, port, host)
    server = None
    if uses_local_postgres():
        click.echo(f"vsearch: starting PostgreSQL (files under {home / 'postgres'})")
        server = local_postgres(home).start(env)
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    parts = Supervisor(airflow_bin, env, click.echo)
    failed: dict[str, int] = {}
    try:
        if not request.event.is_set():
            run_init(ctx, home, env)
        if not request.event.is_set():
            parts.start()
        announced = False
        while not request.wait(1.0):
            failed = parts.exited()
            if failed:
                break
            if not announced and _healthy(port):
                click.echo(banner_text(port, password, env["VSEARCH_STORE"]))
                announced = True
    finally:
        why = f"signal {request.signal}" if request.signal else f"{sorted(failed)} exited"
        click.echo(f"vsearch: stopping Airflow ({why})")
        parts.stop()
        if server is not None:
            stop(server)
        click.echo("vsearch: Airflow stopped")
    if failed:
        raise click.ClickException(f"Airflow's {', '.join(sorted(failed))} exited: see above")


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def banner_text(port: int, password: str, store: str) -> str:
    conf = '{"sources": ["/abs/path/to/photos"]}'
    return (
        f"\n  vsearch: Airflow UI at http://localhost:{port}   login: {ADMIN} / {password}\n"
        f"  Trigger {DAG} with the config {conf}. Backfill from the UI or another terminal:\n"
        f"    vsearch airflow backfill 2026-01-01 2026-01-07 --conf '{conf}'\n"
        f"  Snapshots are published to {store}: `vsearch serve` with the same\n"
        f"  VSEARCH_DATA_DIR (or VSEARCH_STORE) serves them. One Ctrl-C stops everything.\n"
    )


@airflow.command("env")
@pass_context
def env_command(ctx: Context) -> None:
    """Print the exports that point the `airflow` CLI at the running local Airflow."""
    home = airflow_home(ctx)
    if not (home / "airflow.cfg").exists():
        raise click.ClickException(
            f"no local Airflow at {home}: start one with `make airflow` (or `vsearch airflow "
            f"up`) with the same VSEARCH_DATA_DIR ({ctx.settings.data_dir})"
        )
    env = environment(ctx, home)
    for name in ("AIRFLOW_HOME", "PATH", "VSEARCH_DATA_DIR", "VSEARCH_STORE"):
        click.echo(f"export {name}={_quote(env[name])}")


def _quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


COMMANDS = [airflow]
