"""A local Airflow as a user runs it (``vsearch airflow up``, what ``make airflow`` starts:
the API server, the scheduler with the LocalExecutor, the DAG processor, the triggerer),
driven through its REST API and CLI. One per test session: ``local_airflow`` in conftest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vsearch.cli.service_process import free_port, http_json

DAG = "vsearch_build_index"
VSEARCH = str(Path(sys.executable).with_name("vsearch"))
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


class LocalAirflow:
    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.base = f"http://localhost:{self.port}"
        self.log = root / "airflow-up.log"
        self.env = {**os.environ, "VSEARCH_DATA_DIR": str(root / "data")}
        # Retries after seconds, not a minute, so a test can watch a task being retried and
        # bring back the store it failed on in between (test_retries_under_scheduler.py).
        self.env["VSEARCH_RETRY_DELAY_S"] = "5"
        self.proc = subprocess.Popen(
            [VSEARCH, "airflow", "up", "--port", str(self.port)], env=self.env,
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )  # fmt: skip
        self.token = ""

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
        env = {**self.env, "AIRFLOW_HOME": str(self.home)}
        return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True,
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
