from __future__ import annotations

import pytest

from tests.dags.airflow_env import AirflowEnv


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """One migrated Airflow metadata DB (SQLite) for the session."""
    return AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))
