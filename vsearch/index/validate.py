"""Recall validation and the gate: ``indexes/{snapshot}/report.json``.

Held-out queries of two kinds, image->image and text->image
(``vsearch.index.held_out``), are searched through every shard and compared
with exact search over *all* vectors.

nprobe is swept over powers of two, single-threaded (ms per query per core);
the default nprobe is the smallest whose recall@10 reaches the target for
every kind measured. If none does, the report is written with the gate failed
and ``RecallGateFailed`` is raised: nothing may be published.

A report whose inputs (shards, queries, target) are unchanged is reused, so
a retried task neither re-measures nor changes the manifest built from it.
The report is a ``ValidationReport`` (``vsearch.index.report``).
"""

from __future__ import annotations

import logging
import time

from vsearch.index.evaluate import default_nprobe, nprobe_grid
from vsearch.index.held_out import (
    GT_K,
    HeldOutQueries,
    ShardSearch,
    load_queries,
    recall_at,
    search_shards,
    sweep_nprobe,
    write_text_queries,
)
from vsearch.index.layout import report_key, trained_key
from vsearch.index.options import IndexOptions
from vsearch.index.report import (
    IMAGE,
    TEXT,
    CurvePoint,
    Gate,
    KindRecall,
    Latency,
    QueryCounts,
    Recall,
    Seconds,
    Sizes,
    Sweep,
    SweepPoint,
    TrainedInfo,
    ValidationReport,
    write_report,
)
from vsearch.index.structure import get_index
from vsearch.index.validation_inputs import ValidationInputs, load_inputs, reusable_report
from vsearch.storage import ObjectStore

# write_text_queries, search_shards and GT_K moved to vsearch.index.held_out; still
# importable from here.
__all__ = ["GT_K", "RecallGateFailed", "search_shards", "validate_snapshot", "write_text_queries"]

log = logging.getLogger(__name__)


class RecallGateFailed(ValueError):
    """recall@10 at the default nprobe misses the target for a query kind: do not publish."""

    def __init__(self, message: str, report_key: str) -> None:
        super().__init__(message)
        self.report_key = report_key


def validate_snapshot(
    store: ObjectStore,
    snapshot_id: str,
    *,
    target_recall: float = IndexOptions.target_recall,
    nq: int | None = None,
    text_queries: str | None = None,
    require_text: bool = False,
    nshards: int | None = None,
    max_nprobe: int = 1024,
    max_query_ms: float | None = None,
    revalidate: bool = False,
) -> str:
    """Measure recall of the built shards, write ``report.json``, apply the gate.

    Returns the report's key; raises ``RecallGateFailed`` (after writing the
    report) when the target is missed for either query kind.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    started = time.perf_counter()
    inputs = load_inputs(
        store,
        snapshot_id,
        target_recall=target_recall,
        nq=nq,
        text_queries=text_queries,
        require_text=require_text,
        nshards=nshards,
        max_nprobe=max_nprobe,
        max_query_ms=max_query_ms,
    )
    key = report_key(snapshot_id)
    old = None if revalidate else reusable_report(store, key, inputs.fingerprint)
    if old is not None:
        log.info("%s: reusing the report of the same shards and queries", key)
        _gate(old, key)
        return key

    seed, metric = inputs.trained.seed, inputs.spec.metric
    queries = load_queries(store, inputs.inv, inputs.nq, seed, inputs.text_key, metric)
    indexes = [get_index(store, s.uri, mmap=True) for s in inputs.shards]
    search = ShardSearch(indexes, queries, metric)
    grid: list[int | None] = (
        list(nprobe_grid(inputs.spec.nlist, max_nprobe)) if inputs.spec.nlist else [None]
    )
    sweep, curve = sweep_nprobe(search, queries, grid, target_recall)
    default = (
        default_nprobe([(p.nprobe, p.recall_at_10) for p in curve], target_recall)
        if curve
        else None
    )
    # With no default, report recall at the last nprobe tried.
    row = grid.index(default) if default is not None else len(sweep[IMAGE]) - 1
    final = recall_at(search, queries, sweep, row, grid[row])
    gate = _judge(final, target_recall, default, grid[row], exact=not inputs.spec.nlist)
    report = _assemble_report(
        snapshot_id,
        inputs,
        queries,
        sweep=sweep,
        curve=curve,
        default=default,
        final=final,
        gate=gate,
        target_recall=target_recall,
        max_query_ms=max_query_ms,
        seconds=Seconds(round(queries.gt_seconds, 3), round(time.perf_counter() - started, 3)),
    )
    write_report(store, report)
    log.info("%s: %s", key, gate.reason)
    _gate(report, key)
    return key


def _judge(
    final: dict[str, KindRecall],
    target_recall: float,
    default: int | None,
    last_nprobe: int | None,
    *,
    exact: bool,
) -> Gate:
    """The gate: every kind reaches the target, at a default nprobe unless exact."""
    missed = [k for k, r in final.items() if r.recall_at_10 < target_recall]
    if not exact and default is None:
        reason = (
            f"no nprobe up to {last_nprobe} reaches recall@10 {target_recall} "
            f"for {', '.join(missed)}"
        )
    elif missed:
        reason = f"recall@10 below {target_recall} for {', '.join(missed)}"
    else:
        reason = f"recall@10 >= {target_recall} for {', '.join(final)} at nprobe={default}"
    return Gate(not missed and (default is not None or exact), reason)


def _assemble_report(
    snapshot_id: str,
    inputs: ValidationInputs,
    queries: HeldOutQueries,
    *,
    sweep: dict[str, list[SweepPoint]],
    curve: list[CurvePoint],
    default: int | None,
    final: dict[str, KindRecall],
    gate: Gate,
    target_recall: float,
    max_query_ms: float | None,
    seconds: Seconds,
) -> ValidationReport:
    trained = inputs.trained
    default_ms = next((p.ms_per_query for p in curve if p.nprobe == default), None)
    text_sweep = sweep.get(TEXT)
    return ValidationReport(
        snapshot_id=snapshot_id,
        input_fingerprint=inputs.fingerprint,
        spec=inputs.spec,
        metric=inputs.spec.metric,
        trained=TrainedInfo(
            uri=trained_key(snapshot_id),
            sha256=trained.sha256,
            bytes=trained.bytes,
            n_train=trained.n_train,
            seed=trained.seed,
            train_seconds=trained.train_seconds,
            device=trained.device,
        ),
        shards=inputs.shards,
        ntotal=sum(s.ntotal for s in inputs.shards),
        sizes=Sizes.of_shards(inputs.shards),
        queries=QueryCounts(
            image_to_image=len(queries.xq[IMAGE]),
            text_to_image=len(queries.xq[TEXT]) if TEXT in queries.xq else None,
            text_key=inputs.text_key,
        ),
        threads=1,
        target_recall=target_recall,
        default_nprobe=default,
        sweep=Sweep(tuple(sweep[IMAGE]), None if text_sweep is None else tuple(text_sweep)),
        curve=tuple(curve),
        recall=Recall(final[IMAGE], final.get(TEXT)),
        latency=Latency(
            ms_per_query_at_default=default_ms,
            max_query_ms=max_query_ms,
            ok=None if max_query_ms is None or default_ms is None else default_ms <= max_query_ms,
        ),
        gate=gate,
        seconds=seconds,
    )


def _gate(report: ValidationReport, key: str) -> None:
    if not report.gate.passed:
        best = max(report.curve, key=lambda p: p.recall_at_10, default=None)
        how_close = (
            f"; best recall@10 reached: {best.recall_at_10:.4f} at nprobe={best.nprobe}"
            if best
            else ""
        )
        raise RecallGateFailed(
            f"{report.snapshot_id}: recall gate failed: {report.gate.reason} (see {key})"
            + how_close,
            key,
        )
