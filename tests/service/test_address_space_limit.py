"""The service under a hard address-space limit (``ulimit -v``, ``prlimit --as``).

Regression: the bounded shard reader (``service.snapshots.shard_reader``) capped its
child with ``setrlimit(RLIMIT_AS, (cap, RLIM_INFINITY))``; under a hard limit raising
the hard limit is refused, the child died, the loader took that for a transient failure
and retried it every poll: no snapshot ever loaded, not even a good one. The reader now
keeps the inherited hard limit (its cap is the tighter of the budget's and the hard
limit), and a limit it cannot set is a refusal, reported, not retried.

The limit: a plain ``vsearch serve`` over a small snapshot peaks at ~1.6 GiB of address
space (VmPeak; faiss, numpy and 8 request threads' stacks; torch is not imported at
start), and so does the reader's child. 3 GiB lets both start and read; below the
service's own peak the server itself fails to start, which is not what is tested here.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.snapshots import (
    build_snapshot,
    publish,
    publish_series,
    sample_vectors,
    snapshot_id,
)
from tests.service.test_snapshot_admission import id_map_header_claiming, with_shard
from vsearch.cli.service_process import http_json, running_service
from vsearch.storage import LocalStore

HARD_LIMIT = 3 << 30


def hard_address_space_limit() -> None:  # in the server's process, before it starts
    resource.setrlimit(resource.RLIMIT_AS, (HARD_LIMIT, HARD_LIMIT))


@pytest.fixture()
def limited(tmp_path: Path) -> Iterator[tuple[str, LocalStore, Any]]:
    """(base URL, store, snapshot 1's manifest) of a service started under the hard limit."""
    store = LocalStore(tmp_path / "store")
    (first,) = publish_series(store, [1], n=200)
    env = {
        "VSEARCH_STORE": str(store.root),
        "VSEARCH_DATA_DIR": str(tmp_path / "data"),
        "VSEARCH_WATCH_INTERVAL_S": "0.2",
        "VSEARCH_SERVICE_WORKERS": "1",
    }
    with running_service(
        env,
        log_path=tmp_path / "service.log",
        ready_timeout=60,
        preexec_fn=hard_address_space_limit,
    ) as base:
        yield base, store, first


def test_a_service_under_a_hard_address_space_limit_serves_and_still_caps_the_reader(
    limited: tuple[str, LocalStore, Any],
) -> None:
    base, store, first = limited
    status, ready = http_json("GET", f"{base}/readyz")
    assert status == 200 and ready["snapshot_id"] == snapshot_id(1), ready
    xb = sample_vectors(200, first.encoder.dim, seed=1)  # publish_series's day-1 vectors
    status, answer = http_json("POST", f"{base}/v1/search", {"vector": xb[7].tolist(), "k": 3})
    assert status == 200 and answer["hits"][0]["id"] == 1_000_007, answer

    # A shard whose header asks for 8 GiB: beyond the hard limit, which the reader's cap
    # now is (the default budget, half the RAM, is looser), so it is refused, not read.
    m = build_snapshot(store, snapshot_id(2), xb, np.arange(200, dtype="int64"), nshards=1)
    publish(store, with_shard(store, m, 0, id_map_header_claiming(8 << 30)))
    deadline = time.monotonic() + 60
    while (ready := http_json("GET", f"{base}/readyz")[1])["refused"] is None:
        assert time.monotonic() < deadline, ready
        time.sleep(0.2)
    reason = ready["refused"]["reason"]
    assert ready["refused"]["snapshot_id"] == snapshot_id(2), ready
    assert "shards[0]" in reason and "hard address-space limit of 3072 MiB" in reason, reason
    assert ready["snapshot_id"] == snapshot_id(1) and ready["last_error"] is None, ready
    status, answer = http_json("POST", f"{base}/v1/search", {"vector": xb[7].tolist(), "k": 3})
    assert status == 200 and answer["hits"][0]["id"] == 1_000_007, answer
