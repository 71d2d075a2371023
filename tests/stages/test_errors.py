"""Which stage errors a retry cannot fix: those fail an Airflow task at once (run_stage),
the others are retried with backoff."""

from __future__ import annotations

import pytest

from vsearch import stages
from vsearch.catalog import PublishConflict
from vsearch.index import RecallGateFailed, SpecError
from vsearch.sources import SourceError
from vsearch.storage import ObjectNotFound, StoreError


@pytest.mark.parametrize(
    "error",
    [
        SpecError("no index fits"),
        RecallGateFailed("gate", "indexes/x/report.json"),
        SourceError("no images"),
        stages.StageError("no sources"),
        ObjectNotFound("indexes/x/trained.json"),
        ValueError("bad parameter"),
    ],
)
def test_permanent(error: Exception) -> None:
    assert stages.is_permanent(error)


@pytest.mark.parametrize(
    "error",
    [
        StoreError("S3 is down"),
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        PublishConflict("lost the compare-and-swap"),
        MemoryError(),
        RuntimeError("a worker was lost"),
    ],
)
def test_transient(error: Exception) -> None:
    assert not stages.is_permanent(error)
