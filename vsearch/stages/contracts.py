"""What the stages take and return, as types: plain JSON-able dicts for Airflow's XCom.

A ``Task`` is one element of ``plan``'s result, the argument of ``fetch`` and
``embed``; the results name the objects a stage committed. They are TypedDicts, not
dataclasses, so that a DAG task returns them as they are and a retry or a backfill
of a date passes the same JSON along.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from vsearch.index.options import IndexOverrides
from vsearch.index.shard_build import ShardResult

__all__ = [
    "CompactSummary",
    "EmbedResult",
    "Fetched",
    "PublishOutcome",
    "ShardResult",
    "Task",
    "TrainOptions",
    "ValidateOptions",
]

# A build's index options as a DAG run's params or the CLI's options give them.
TrainOptions = IndexOverrides


class Fetched(TypedDict):
    """A URL-list shard downloaded into ``images/{dataset}/{shard:05d}.tar``."""

    key: str
    ok: int
    failed: int
    reasons: dict[str, int]  # failures by reason


class Task(TypedDict):
    """One partition of a run: ``plan`` returns them, numbered 0, 1, 2... across sources."""

    partition: int
    source: str  # the source's URI as given
    spec: dict[str, Any]  # the source's own partition spec
    options: dict[str, Any]  # how to open the source
    fetched: NotRequired[Fetched]  # set by ``fetch`` for a URL list


class EmbedResult(TypedDict):
    """A committed embedding partition: its commit record's key and counts."""

    partition: int
    key: str
    count: int
    failures: int


class PublishOutcome(TypedDict):
    """The manifest's key and a ``vsearch.catalog.PublishResult``'s fields."""

    key: str
    snapshot_id: str
    current: str  # what CURRENT names afterwards
    moved: bool
    message: str


class CompactSummary(TypedDict):
    """What ``compact`` folded, and the keys of the run record and the trained index."""

    snapshot_id: str
    base_snapshot_id: str
    delta_watermark: str
    entries: int
    kept: int
    upserts: int
    deletes: int
    run_record: str
    trained: str


class ValidateOptions(TypedDict, total=False):
    """How ``validate`` measures; None (or left out) takes the setting's default."""

    target_recall: float | None
    max_query_ms: float | None
    nq: int | None  # held-out image queries to use (default: all held out at training)
    text_queries: str | None
    require_text: bool
