"""What every image source gives: partitions (small JSON-able dicts) and items per partition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

from vsearch.canonical_json import fingerprint

# Metadata key a source sets on an item it could not produce (failed download,
# sample without an image): the embedding stage records the reason and moves on.
FAILED = "_failed"

PartitionSpec = dict[str, Any]
"""JSON-serialisable description of one partition: ``{"source", "kind", "index", ...}``.

It travels through Airflow XCom, so it stays small (no item lists)."""


class Item(NamedTuple):
    key: str  # unique within a snapshot; the item id is derived from it (vsearch.ids)
    data: bytes  # encoded image bytes, undecoded; b"" when the source failed (see FAILED)
    caption: str | None
    metadata: dict[str, Any]


class SourceError(ValueError):
    """A source URI or option is unusable, or the source changed under a partition."""


@runtime_checkable
class Source(Protocol):
    uri: str

    def partitions(self) -> list[PartitionSpec]:
        """The partitions, in a stable order; ``spec["index"]`` is 0, 1, 2..."""
        ...

    def items(self, spec: PartitionSpec) -> Iterator[Item]:
        """The items of one partition, in a stable order."""
        ...

    def fingerprint(self, spec: PartitionSpec) -> str:
        """Identifies the content of one partition without reading it all where possible."""
        ...


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most ``size`` covering range(n)."""
    if size <= 0:
        raise SourceError(f"partition size must be > 0, got {size}")
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def digest(*parts: Any) -> str:
    """sha256 of the JSON of ``parts``: a fingerprint of small, JSON-able values."""
    return fingerprint(parts)


def check_spec(spec: PartitionSpec, uri: str, kind: str) -> None:
    if spec.get("source") != uri or spec.get("kind") != kind:
        raise SourceError(
            f"partition {spec!r} is not one of source {uri!r} ({kind}); "
            "pass a spec returned by this source's partitions()"
        )
