"""A PostgreSQL server of its own for the local Airflow (``vsearch airflow up``).

Why not SQLite: ``airflow backfill create`` (and the UI's and REST API's backfill)
opens a transaction, reads, then writes. SQLite refuses that upgrade at once, without
waiting for its busy timeout, when another process wrote in between, and the scheduler
writes all the time: so a backfill made while Airflow runs fails now and then with
"database is locked" (Airflow's own API says backfills on SQLite under concurrency are
unsupported). PostgreSQL has no such limit.

Nothing to set up: the server's files live under the Airflow home
(``$VSEARCH_DATA_DIR/airflow/postgres``), it listens on a Unix socket in a directory only
this user can enter (no TCP port, so nothing clashes with another PostgreSQL), and it
runs only while ``vsearch airflow up`` does. The binaries are, in order:
``VSEARCH_PG_BIN``, those the ``pgserver`` wheel ships (installed with the ``airflow``
extra on Linux x86-64 and macOS), then the system's (``pg_ctl`` on ``PATH`` or
``/usr/lib/postgresql/*/bin``). PostgreSQL refuses to run as root; as root the server
runs in a user namespace as ``nobody`` (``unshare``), still on files owned by root.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DB_USER = "airflow"
DB_NAME = "airflow"
PORT = 5432  # names the socket file only: the server listens on no TCP port
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes, with its terminating NUL


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started; the message says what to do."""


def find_binaries(environ: dict[str, str] | None = None) -> Path:
    """The directory holding ``initdb`` and ``postgres`` (see the module's docstring)."""
    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    if env.get("VSEARCH_PG_BIN"):
        candidates.append(Path(env["VSEARCH_PG_BIN"]))
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    raise PostgresUnavailable(
        "no PostgreSQL server binaries found (looked in: "
        + (", ".join(str(c) for c in candidates) or "nowhere")
        + "). Install the airflow extra (pip install -e '.[airflow]': it ships them on "
        "Linux x86-64 and macOS), or PostgreSQL from your system's packages, or set "
        "VSEARCH_PG_BIN; or set VSEARCH_AIRFLOW_DB to a server of your own."
    )


def _as_unprivileged() -> list[str]:
    """The command prefix that runs a server binary as someone other than root."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise PostgresUnavailable(
            "PostgreSQL does not run as root, and `unshare` (util-linux) is missing here "
            "to run it as another user: run `make airflow` as an ordinary user, or set "
            "VSEARCH_AIRFLOW_DB to a server of your own."
        )
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}"]


@dataclass(frozen=True)
class LocalPostgres:
    """The server whose files are under ``root`` (``<airflow home>/postgres``)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """``root/run``, or a short directory under the temp dir when that path would not
        fit a socket address."""
        here = self.root.resolve() / "run"
        if len(f"{here}/.s.PGSQL.{PORT}") <= SOCKET_PATH_MAX:
            return here
        digest = hashlib.sha256(str(here).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"vsearch-pg-{digest}"

    def url(self, driver: str = "psycopg2") -> str:
        """The SQLAlchemy URL (``psycopg2`` for Airflow's engine, ``asyncpg`` for its API)."""
        return f"postgresql+{driver}://{DB_USER}@/{DB_NAME}?host={self.socket_dir}"

    def start(
        self, environ: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.Popen[bytes]:
        """Create the cluster if there is none, start the server, wait until it answers,
        and create the database. The caller stops it with ``stop``."""
        binaries = find_binaries(environ)
        prefix = _as_unprivileged()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(prefix, binaries)
        self._stop_leftover()
        argv = [*prefix, str(binaries / "postgres"), "-D", str(self.data),
                "-k", str(self.socket_dir), "-p", str(PORT),
                "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700",
                "-c", "max_connections=200"]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server's stderr, kept open by it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready(proc, timeout)
            self._create_database()
        except BaseException:
            stop(proc)
            raise
        return proc

    def _initdb(self, prefix: list[str], binaries: Path) -> None:
        # Into a temporary directory first: an interrupted initdb leaves no half cluster.
        fresh = self.root / "data.initdb"
        shutil.rmtree(fresh, ignore_errors=True)
        done = subprocess.run(
            [*prefix, str(binaries / "initdb"), "-D", str(fresh), "-U", DB_USER,
             "--auth=trust", "-E", "UTF8", "--no-instructions"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            shutil.rmtree(fresh, ignore_errors=True)
            raise PostgresUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip()}")
        fresh.rename(self.data)

    def _stop_leftover(self) -> None:
        """Stop a server left running on this cluster (its supervisor was SIGKILLed)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.data).encode() not in cmdline:
            return  # the pid was reused: the server itself ignores a stale pid file
        os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise PostgresUnavailable(
                    f"PostgreSQL exited ({proc.returncode}); its log, {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                psycopg2.connect(dbname="postgres", user=DB_USER, host=str(self.socket_dir)).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", user=DB_USER, host=str(self.socket_dir))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            conn.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
