"""A local Airflow as a user runs it: ``make airflow`` (``vsearch airflow up``: its own
PostgreSQL, the API server, the scheduler with the LocalExecutor, the DAG processor, the
triggerer), driven through its REST API and CLI, and stopped as a user stops it: one
SIGTERM (a service manager, no terminal) or one Ctrl-C typed in its terminal (a pty).
One per test session: ``local_airflow`` in conftest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from vsearch.cli.service_process import free_port, http_json

DAG = "vsearch_build_index"
REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
VSEARCH = str(VENV / "bin" / "vsearch")
AIRFLOW = str(VENV / "bin" / "airflow")


def make_airflow_argv() -> list[str]:
    """``make airflow`` with this test's interpreter's venv (``-o``: never reinstall)."""
    return ["make", "-s", "-C", str(REPO), f"VENV={VENV}", "-o", f"{VENV}/.installed-stamp",
            "airflow"]  # fmt: skip


def leftovers(home: Path) -> dict[int, str]:
    """Processes still running for the Airflow at ``home``: any with it as AIRFLOW_HOME,
    and its PostgreSQL server."""
    found = {}
    wanted = f"AIRFLOW_HOME={home}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if wanted in environ or str(home / "postgres").encode() in cmdline:
            found[int(pid)] = cmdline.decode(errors="replace")[:200]
    return found


class LocalAirflow:
    def __init__(self, root: Path, *, terminal: bool = False) -> None:
        """Start ``make airflow`` with the data dir set only by ``VSEARCH_DATA_DIR`` (as a
        user exporting it would), in a pseudo-terminal of its own when ``terminal``."""
        self.root, self.port = root, free_port()
        self.base = f"http://localhost:{self.port}"
        self.log = root / "airflow-up.log"
        self.env = {**os.environ, "VSEARCH_DATA_DIR": str(root / "data"),
                    "VSEARCH_AIRFLOW_PORT": str(self.port)}  # fmt: skip
        for name in ("AIRFLOW_HOME", "VSEARCH_AIRFLOW_DB", "MAKEFLAGS"):
            self.env.pop(name, None)
        # Retries after seconds, not a minute, so a test can watch a task being retried and
        # bring back the store it failed on in between (test_retries_under_scheduler.py).
        self.env["VSEARCH_RETRY_DELAY_S"] = "5"
        self.token = ""
        self.terminal: int | None = None
        if terminal:
            self.terminal, tty = os.openpty()
            self.proc = subprocess.Popen(
                make_airflow_argv(), env=self.env, stdin=tty, stdout=tty, stderr=tty,
                preexec_fn=_own_terminal,
            )  # fmt: skip
            os.close(tty)
            threading.Thread(target=self._copy_terminal, daemon=True).start()
        else:
            self.proc = subprocess.Popen(
                make_airflow_argv(), env=self.env, stdin=subprocess.DEVNULL,
                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                start_new_session=True,
            )  # fmt: skip

    def _copy_terminal(self) -> None:
        assert self.terminal is not None
        with open(self.log, "wb") as log:
            while True:
                try:
                    chunk = os.read(self.terminal, 65536)
                except OSError:  # the other end closed: everything on the terminal exited
                    return
                if not chunk:
                    return
                log.write(chunk)
                log.flush()

    @property
    def home(self) -> Path:
        return self.root / "data" / "airflow"

    def wait_ready(self, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if self.token or self._login():
                    status, _ = self.api("GET", f"/api/v2/dags/{DAG}")
                    health = self.api("GET", "/api/v2/monitor/health")[1]
                    if status == 200 and health["scheduler"]["status"] == "healthy":
                        return
            except OSError:
                pass
            time.sleep(2)
        raise AssertionError("Airflow did not come up:\n" + self.log.read_text()[-4000:])

    def _login(self) -> bool:
        password = json.loads((self.home / "passwords.json").read_text())["admin"]
        status, body = http_json("POST", f"{self.base}/auth/token",
                                 {"username": "admin", "password": password})  # fmt: skip
        self.token = body["access_token"] if status in (200, 201) else ""
        return bool(self.token)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http_json(method, self.base + path, body, {"Authorization": f"Bearer {self.token}"})

    def airflow_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``airflow`` CLI in another terminal, set up as the README says: with the
        exports ``vsearch airflow env`` prints."""
        env = {**self.env, **self.exports()}
        return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    def exports(self) -> dict[str, str]:
        import shlex

        out = subprocess.run([VSEARCH, "airflow", "env"], env=self.env, capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
        pairs = (shlex.split(line.removeprefix("export "))[0] for line in out.stdout.splitlines())
        return dict(pair.split("=", 1) for pair in pairs)

    def vsearch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VSEARCH, *args], env=self.env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    def runs(self, dag: str = DAG) -> dict[str, dict[str, Any]]:
        status, body = self.api("GET", f"/api/v2/dags/{dag}/dagRuns?limit=100")
        assert status == 200, body
        return {r["dag_run_id"]: r for r in body["dag_runs"]}

    def task_instances(self, run_id: str, dag: str = DAG) -> list[dict[str, Any]]:
        """The run's task instances (``task_id``, ``map_index``, ``state``, ``try_number``…)."""
        status, body = self.api("GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances")
        assert status == 200, body
        return list(body["task_instances"])

    def failed_tasks(self, run_id: str, dag: str = DAG) -> str:
        return json.dumps([(t["task_id"], t["state"]) for t in self.task_instances(run_id, dag)])

    def wait_runs(self, run_ids: set[str], dag: str = DAG, timeout: float = 1500) -> dict[str, str]:
        """Wait until every run in ``run_ids`` has finished; return their states."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            runs = self.runs(dag)
            states = {r: runs[r]["state"] for r in run_ids if r in runs}
            if len(states) == len(run_ids) and set(states.values()) <= {"success", "failed"}:
                return states
            time.sleep(3)
        raise AssertionError(f"runs did not finish: {states}")

    def processes(self) -> dict[int, str]:
        """Every process of it now: ``make``'s descendants (the API server among them: it
        rewrites its title over its environment) and any with its AIRFLOW_HOME."""
        import psutil

        procs = leftovers(self.home)
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    procs[child.pid] = " ".join(child.cmdline())[:200]
        except psutil.NoSuchProcess:
            pass
        return procs

    def stop(self, timeout: float = 60) -> float:
        """Stop it as a user would: Ctrl-C typed in its terminal, else one SIGTERM to the
        ``make`` process. Returns the seconds until no process of it was left; after
        ``timeout``, kills what is left and fails."""
        import psutil

        before = [psutil.Process(pid) for pid in self.processes() if psutil.pid_exists(pid)]
        started = time.monotonic()
        if self.proc.poll() is None:
            if self.terminal is not None:
                os.write(self.terminal, b"\x03")
            else:
                self.proc.send_signal(signal.SIGTERM)

        def left() -> list[str]:
            alive = {p.pid: " ".join(p.cmdline())[:200] for p in before if _alive(p)}
            return [f"{pid}: {cmd}" for pid, cmd in {**alive, **self.processes()}.items()]

        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None and not left():
                return time.monotonic() - started
            time.sleep(0.2)
        remaining = left()
        for line in remaining:
            with contextlib.suppress(OSError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        raise AssertionError(f"still running {timeout:.0f} s after the stop: {remaining}")


def _alive(process: Any) -> bool:
    import psutil

    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _own_terminal() -> None:
    """In the child: a session whose controlling terminal is its stdin (a pty), and the
    default SIGINT disposition a shell gives a foreground job (a test runner started in
    the background passes SIGINT on ignored)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
