"""``SnapshotRefused``: why a snapshot cannot be served; ``NotReady``: none is served yet.

Raised while loading one (``service.snapshots.snapshot_loader``, ``service.snapshots.shard_reader``,
``service.snapshots.canary``); the registry remembers it until CURRENT moves. Anything else
that goes wrong while loading is treated as transient.
"""

from __future__ import annotations


class SnapshotRefused(Exception):
    """The snapshot cannot be served; the message says why."""


class NotReady(Exception):
    """No snapshot is being served yet."""
