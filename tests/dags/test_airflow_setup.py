"""`make airflow`'s parts that need no running Airflow: its own PostgreSQL server (real,
started from the binaries it finds), the data dir it uses, `vsearch airflow env`, and
the configuration it writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
from click.testing import CliRunner

from vsearch.airflow_setup.local_postgres import SOCKET_PATH_MAX, LocalPostgres, stop
from vsearch.cli import main

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def query(pg: LocalPostgres, sql: str) -> object:
    conn = psycopg2.connect(dbname="airflow", user="airflow", host=str(pg.socket_dir))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None  # type: ignore[index]
    finally:
        conn.close()


def test_its_own_postgres_keeps_data_across_restarts_on_a_socket_only(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "airflow" / "postgres")
    server = pg.start()
    try:
        assert pg.url() == f"postgresql+psycopg2://airflow@/airflow?host={pg.socket_dir}"
        assert query(pg, "SHOW listen_addresses") == ""  # no TCP port at all
        assert (pg.socket_dir.stat().st_mode & 0o777) == 0o700
        query(pg, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    finally:
        stop(server)
    assert server.returncode == 0 and not (pg.data / "postmaster.pid").exists()
    server = pg.start()  # the same cluster: no second initdb
    try:
        assert query(pg, "SELECT x FROM kept") == 42
    finally:
        stop(server)


def test_a_server_left_running_by_a_killed_supervisor_is_stopped_at_the_next_start(
    tmp_path: Path,
) -> None:
    pg = LocalPostgres(tmp_path / "pg")
    orphan = pg.start()  # its supervisor "died": nobody will stop it
    server = pg.start()
    try:
        orphan.wait(30)  # the second start stopped it, then started its own
        assert query(pg, "SELECT 1") == 1
    finally:
        stop(server)
        if orphan.poll() is None:
            os.kill(orphan.pid, signal.SIGKILL)


def test_a_socket_path_too_long_for_an_address_moves_to_the_temp_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    pg = LocalPostgres(deep / "postgres")
    assert not str(pg.socket_dir).startswith(str(deep))
    assert len(f"{pg.socket_dir}/.s.PGSQL.5432") <= SOCKET_PATH_MAX
    assert LocalPostgres(deep / "postgres").socket_dir == pg.socket_dir  # stable


def make_dry_run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), f"VENV={VENV}", "-o", f"{VENV}/.installed-stamp",
         "airflow", *args],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def test_make_airflow_takes_the_data_dir_from_vsearch_data_dir_or_data_dir() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "MAKEFLAGS")}
    exported = make_dry_run({**env, "VSEARCH_DATA_DIR": "/srv/vsearch"})
    assert "--data-dir" not in exported  # the command reads VSEARCH_DATA_DIR itself
    assert "--data-dir /srv/other" in make_dry_run(env, "DATA_DIR=/srv/other")


def test_airflow_env_names_the_home_and_creates_nothing_where_there_is_none(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    env = {"VSEARCH_DATA_DIR": str(data), "AIRFLOW_HOME": ""}
    missing = runner.invoke(main, ["airflow", "env"], env=env)
    assert missing.exit_code == 1
    assert "no local Airflow at" in missing.output and "make airflow" in missing.output
    assert not data.exists()

    (data / "airflow").mkdir(parents=True)
    (data / "airflow" / "airflow.cfg").write_text("[core]\n")
    found = runner.invoke(main, ["airflow", "env"], env=env)
    assert found.exit_code == 0, found.output
    assert f"export AIRFLOW_HOME={data / 'airflow'}" in found.output
    assert sorted(p.name for p in (data / "airflow").iterdir()) == ["airflow.cfg"]


def test_the_config_binds_loopback_and_names_its_own_postgres(tmp_path: Path) -> None:
    from vsearch.cli.airflow import config_text, database_url

    keys = {"fernet_key": "f", "secret_key": "s", "jwt_secret": "j"}
    os.environ.pop("VSEARCH_AIRFLOW_DB", None)
    text = config_text(tmp_path, 8080, database_url(tmp_path), keys, "127.0.0.1")
    assert "\nhost = 127.0.0.1\n" in text
    assert "execution_api_server_url = http://127.0.0.1:8080/execution/" in text
    assert f"sql_alchemy_conn = postgresql+psycopg2://airflow@/airflow?host={tmp_path}" in text
    assert "sql_alchemy_connect_args" not in text  # SQLite's, not PostgreSQL's


def test_the_supervisor_stops_every_process_of_a_component_even_one_ignoring_sigterm(
    tmp_path: Path,
) -> None:
    from vsearch.airflow_setup.supervisor import Supervisor

    # A component that starts a worker ignoring SIGTERM (as LocalExecutor workers were
    # seen to, deadlocked), then waits.
    script = tmp_path / "component"
    script.write_text(
        "#!/bin/sh\n"
        "sh -c 'trap \"\" TERM; while true; do sleep 0.1; done' &\n"
        "while true; do sleep 0.1; done\n"
    )
    script.chmod(0o755)
    lines: list[str] = []
    parts = Supervisor(str(script), os.environ, lines.append)
    parts.start(["scheduler"])
    time.sleep(0.5)
    everything = parts.processes()
    assert len(everything) >= 2
    started = time.monotonic()
    parts.stop(grace=1.0)
    assert time.monotonic() - started < 10
    assert not [p for p in everything if p.is_running() and p.status() != "zombie"]


def test_a_second_airflow_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """It would share the first's PostgreSQL, and stop it as a leftover."""
    import fcntl

    home = tmp_path / "data" / "airflow"
    home.mkdir(parents=True)
    with open(home / "up.lock", "w") as lock:
        lock.write("4242")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first `vsearch airflow up`
        second = CliRunner().invoke(
            main,
            ["airflow", "up"],
            env={"VSEARCH_DATA_DIR": str(tmp_path / "data"), "AIRFLOW_HOME": ""},
        )
    assert second.exit_code == 1
    assert f"a local Airflow already runs on {home} (pid 4242)" in second.output
    assert not (home / "postgres").exists() and not (home / "airflow.cfg").exists()
