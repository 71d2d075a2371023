from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dags.airflow_env import AirflowEnv
from tests.dags.local_airflow import LocalAirflow


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """One migrated Airflow metadata DB (SQLite) for the session."""
    return AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture(scope="session")
def local_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    """A local Airflow as ``make airflow`` runs it, shared by the tests that need the
    real scheduler (it takes a minute to come up). Its teardown checks that one SIGTERM
    to ``make``, as a service manager sends without a terminal, stops every part of it
    (API server, scheduler and its workers, DAG processor, triggerer, PostgreSQL)."""
    running = LocalAirflow(tmp_path_factory.mktemp("local-airflow"))
    try:
        running.wait_ready()
        yield running
    except BaseException:
        running.stop()
        raise
    assert len(running.processes()) >= 6, "Airflow was not running before the stop"
    seconds = running.stop()
    assert seconds < 30, f"one SIGTERM took {seconds:.0f} s to stop everything"
