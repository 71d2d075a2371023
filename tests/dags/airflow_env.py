"""A real Airflow for the tests: a temporary AIRFLOW_HOME with SQLite, our dags/
and plugins/ folders, and the ``airflow`` CLI run as a subprocess. What a run did is
read back from Airflow's metadata DB (run and task instance states, try numbers,
asset events), not from its log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
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

    def db(self) -> sqlite3.Connection:
        """The metadata DB, read-only (the CLI's runs have finished when it is read)."""
        return sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True)

    def dags_test(
        self,
        dag_id: str,
        logical_date: str,
        conf: dict[str, object] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> DagTestRun:
        """Run one DAG run in-process with ``airflow dags test`` (no scheduler needed).

        A rerun of a logical date replaces that date's run (new run id, tries from 1);
        the asset events the replaced run emitted stay.
        """
        proc = self.run(
            "dags", "test", dag_id, logical_date, "-c", json.dumps(conf or {}), extra_env=extra_env
        )
        with closing(self.db()) as db:
            row = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                (dag_id,),
            ).fetchone()
            if row is None:
                return DagTestRun(proc, "", f"no run (exit {proc.returncode})", [])
            tis = db.execute(
                "SELECT task_id, map_index, state, try_number FROM task_instance"
                " WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
                (dag_id, row[0]),
            ).fetchall()
        return DagTestRun(proc, row[0], row[1], [TaskTry(*ti) for ti in tis])

    def asset_events(self, asset: str, run_id: str | None = None) -> list[AssetEventRow]:
        """The events recorded for the Asset named ``asset`` (of one source run, if given)."""
        query = (
            "SELECT e.source_dag_id, e.source_run_id, e.source_task_id, e.extra"
            " FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ?"
        )
        args: tuple[str, ...] = (asset,)
        if run_id is not None:
            query += " AND e.source_run_id = ?"
            args += (run_id,)
        with closing(self.db()) as db:
            rows = db.execute(query + " ORDER BY e.id", args).fetchall()
        return [AssetEventRow(d, r, t, json.loads(x) if x else {}) for d, r, t, x in rows]


@dataclass(frozen=True)
class TaskTry:
    """One task instance as the metadata DB holds it at the end of a run."""

    task_id: str
    map_index: int  # -1 unless mapped
    state: str | None
    try_number: int


@dataclass(frozen=True)
class AssetEventRow:
    source_dag_id: str | None
    source_run_id: str | None
    source_task_id: str | None
    extra: dict[str, object]


@dataclass
class DagTestRun:
    """What ``airflow dags test`` did: its process, and the run's final state and task
    instances from the metadata DB."""

    proc: subprocess.CompletedProcess[str]
    run_id: str
    state: str
    tasks: list[TaskTry]

    @property
    def log(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def states(self) -> dict[str, set[str | None]]:
        """Each task id's states, over its map indexes."""
        out: dict[str, set[str | None]] = {}
        for ti in self.tasks:
            out.setdefault(ti.task_id, set()).add(ti.state)
        return out

    def task(self, task_id: str) -> TaskTry:
        """An unmapped task's instance."""
        (ti,) = [t for t in self.tasks if t.task_id == task_id]
        return ti
