"""A real Airflow for the tests: a temporary AIRFLOW_HOME with SQLite, our dags/
and plugins/ folders, and the ``airflow`` CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path) -> AirflowEnv:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        }
        airflow = cls(home, env)
        airflow.run("db", "migrate", timeout=300)
        return airflow

    def run(
        self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [AIRFLOW, *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        log = self.home / "cli.log"
        with open(log, "a") as f:
            f.write(
                f"$ airflow {' '.join(args)}  -> {out.returncode}\n{out.stdout}\n{out.stderr}\n"
            )
        return out

    def dags_test(
        self,
        dag_id: str,
        logical_date: str,
        conf: dict[str, object] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one DAG run in-process with ``airflow dags test`` (no scheduler needed)."""
        return self.run(
            "dags", "test", dag_id, logical_date, "-c", json.dumps(conf or {}), extra_env=extra_env
        )


def run_state(result: subprocess.CompletedProcess[str]) -> str:
    """The final state ``airflow dags test`` logged for the run ('success', 'failed', …)."""
    text = result.stdout + result.stderr
    marker = "DagRun Finished:"
    lines = [line for line in text.splitlines() if marker in line]
    if not lines:
        return f"unknown (exit {result.returncode})"
    return lines[-1].split("state=", 1)[1].split(",", 1)[0]
