"""Positions in the delta log, and the snapshot watermark made of one.

Every delta-log entry has an id ``"ms-seq"`` (a Redis stream id; the SQLite log
emits the same shape). A snapshot's ``delta_watermark`` is the id of the last
entry folded into it: entries at or below it are in the base, entries above it
still live in the delta. ``LOG_ORIGIN`` sits before the first entry: a snapshot
built from images alone folds in nothing.
"""

from __future__ import annotations

from typing import Final

# An entry id as (ms, seq): tuples compare in log order.
Watermark = tuple[int, int]

LOG_ORIGIN: Final = "0-0"


def parse_entry_id(entry_id: str) -> Watermark:
    """``"ms-seq"`` as a tuple that compares in log order; ValueError if malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"invalid delta entry id {entry_id!r}: expected 'ms-seq'")
    return int(ms), int(seq)


def format_entry_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"
