"""What the vsearch DAG files share: default arguments, the Asset, the tasks of both DAGs.

Airflow puts the DAG folder on ``sys.path`` (the bundle path), so DAG files import
this package; ``.airflowignore`` keeps the DAG processor from parsing it as DAGs.
Nothing heavy is imported here: DAG files are parsed every few seconds. So the stage
contracts (``vsearch.stages.contracts``) are imported for type checking only, and a
task returning one of those dicts says ``multiple_outputs=True``, which Airflow cannot
infer from a name it cannot resolve (as it did from ``dict[str, Any]``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

# Announced by both DAGs' announce_current task, only when publish moved CURRENT;
# downstream DAGs can schedule on it.
CURRENT_SNAPSHOT = Asset("vsearch_current_snapshot")

# Compaction snapshots are tagged: they sort just after the same date's full build.
COMPACT_TAG = "c"

# Retries with backoff for what can be transient (S3, a worker lost); the recall gate
# fails without retrying (AirflowFailException), since it is deterministic.
DEFAULT_ARGS: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}
