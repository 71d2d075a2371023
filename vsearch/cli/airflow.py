"""``vsearch airflow``: a local Airflow 3 for this project, set up and started in one step.

``vsearch airflow up`` (what ``make airflow`` runs) writes ``$AIRFLOW_HOME/airflow.cfg``
(default home: ``$VSEARCH_DATA_DIR/airflow``), runs the idempotent init (metadata DB,
the ``vsearch_store`` connection, the ``gpu`` pool) and starts the API server (UI),
the scheduler (LocalExecutor), the DAG processor and the triggerer with this
environment's ``bin/`` on ``PATH``. It prints the UI address and the login.

The metadata DB is SQLite under the home, for the same reason the rest of vsearch
defaults to embedded parts: nothing to install or run. Airflow opens it in WAL mode
(readers do not block the writer); vsearch raises the driver's busy timeout
(``vsearch.airflow_setup.sqlite_args``) so that an ``airflow backfill create`` typed in another
terminal while the scheduler writes waits its turn instead of failing with "database
is locked". Point ``VSEARCH_AIRFLOW_DB`` at PostgreSQL for more than one machine.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin"
SQLITE_ARGS = "sql_alchemy_connect_args = vsearch.airflow_setup.sqlite_args.CONNECT_ARGS"


def airflow_home(ctx: Context) -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path(ctx.settings.data_dir) / "airflow").resolve()


def config_text(home: Path, port: int, db: str, keys: dict[str, str]) -> str:
    """The airflow.cfg of a local Airflow: this repository's DAGs and plugins, LocalExecutor.

    ``keys`` are the home's own secrets: every component must sign and check tokens with
    the same JWT secret (a component that makes up its own fails every task with
    "Invalid auth token"), and connections are stored encrypted with the Fernet key.
    """
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
execution_api_server_url = http://localhost:{port}/execution/
simple_auth_manager_users = {ADMIN}:admin
simple_auth_manager_passwords_file = {home / "passwords.json"}

[database]
sql_alchemy_conn = {db}
{SQLITE_ARGS if db.startswith("sqlite") else ""}

[api]
port = {port}
base_url = http://localhost:{port}
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


def prepare(ctx: Context, port: int) -> tuple[Path, dict[str, str], str]:
    """Write the config and the login; return the home, the environment and the password."""
    home = airflow_home(ctx)
    home.mkdir(parents=True, exist_ok=True)
    db = os.environ.get("VSEARCH_AIRFLOW_DB") or f"sqlite:///{home / 'airflow.db'}"
    cfg = home / "airflow.cfg"
    cfg.write_text(config_text(home, port, db, home_keys(home)))
    cfg.chmod(0o600)
    passwords = home / "passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    password = str(json.loads(passwords.read_text())[ADMIN])
    bin_dir = str(Path(sys.executable).parent)
    data_dir = str(Path(ctx.settings.data_dir).resolve())
    store = ctx.settings.store
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # Tasks run in other processes and directories: every relative setting made absolute.
        "VSEARCH_DATA_DIR": data_dir,
        "VSEARCH_STORE": store if "://" in store else str(Path(store).resolve()),
    }
    for name in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        env.pop(name, None)  # the config file names this repository's folders
    return home, env, password


def init(ctx: Context, port: int) -> tuple[Path, dict[str, str], str]:
    from vsearch.airflow_setup.init_steps import run_init
    from vsearch.config import Settings

    home, env, password = prepare(ctx, port)
    settings = Settings.load(env)
    airflow = str(Path(sys.executable).with_name("airflow"))
    if run_init(settings, env, airflow=airflow, command_env=env, say=click.echo) != 0:
        raise click.ClickException(f"airflow init failed (AIRFLOW_HOME={home})")
    return home, env, password


port_option = click.option("--port", type=int, default=8080, show_default=True,
                           help="The API server's (UI's) port.")  # fmt: skip


@click.group()
def airflow() -> None:
    """A local Airflow for the vsearch DAGs: `vsearch airflow up` (make airflow)."""


@airflow.command("init")
@port_option
@pass_context
def init_command(ctx: Context, port: int) -> None:
    """Write airflow.cfg, migrate the DB, create the store connection and the gpu pool.

    Idempotent: run it again after changing VSEARCH_* settings.
    """
    home, _, _ = init(ctx, port)
    click.echo(f"AIRFLOW_HOME={home}")


@airflow.command("up")
@port_option
@pass_context
def up(ctx: Context, port: int) -> None:
    """Init, then run Airflow (API server + UI, scheduler, DAG processor, triggerer) until
    interrupted (Ctrl-C)."""
    import signal
    import subprocess

    home, env, password = init(ctx, port)
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    banner = banner_text(home, port, password, airflow_bin)
    proc = subprocess.Popen([airflow_bin, "standalone"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            click.echo(line, nl=False)
            if "Airflow is ready" in line:
                click.echo(banner)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
    sys.exit(proc.wait())


def banner_text(home: Path, port: int, password: str, airflow_bin: str) -> str:
    conf = '{"sources": ["/path/to/photos"]}'
    return (
        f"\n  vsearch: Airflow UI at http://localhost:{port}   login: {ADMIN} / {password}\n"
        f"  Trigger vsearch_build_index with the config {conf}; backfill from the UI, or\n"
        f"  from another terminal:\n"
        f"    export AIRFLOW_HOME={home}\n"
        f"    {airflow_bin} backfill create --dag-id vsearch_build_index --from-date 2026-01-01"
        f" --to-date 2026-01-02 --dag-run-conf '{conf}'\n"
    )


@airflow.command("env")
@port_option
@pass_context
def env_command(ctx: Context, port: int) -> None:
    """Print the exports that point the `airflow` CLI at this local Airflow."""
    _, env, _ = prepare(ctx, port)
    for name in ("AIRFLOW_HOME", "PATH", "VSEARCH_DATA_DIR", "VSEARCH_STORE"):
        click.echo(f"export {name}={_quote(env[name])}")


def _quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


COMMANDS = [airflow]
