"""``DeltaLog``: the interface both backends implement (see the package docstring)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from vsearch.delta.entries import DeltaEntry, DeltaWrite
from vsearch.delta.watermarks import LOG_ORIGIN


class DeltaLog(ABC):
    """An ordered, shared, durable log of upserts and deletes. See the module docstring."""

    url: str

    @abstractmethod
    def append(self, writes: Sequence[DeltaWrite]) -> list[DeltaEntry]:
        """Append ``writes`` atomically, in order; return them with their ids."""

    @abstractmethod
    def read(self, after: str = LOG_ORIGIN, upto: str | None = None) -> list[DeltaEntry]:
        """Entries with ``after < id <= upto`` (``upto=None``: to the end), in log order."""

    @abstractmethod
    def thumbnail(self, entry_id: str) -> bytes | None:
        """The thumbnail entry ``entry_id`` carries; None when it has none or is gone."""

    @abstractmethod
    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        """Entries after ``after``; waits up to ``timeout_s`` for one when there are none."""

    @abstractmethod
    def last_id(self) -> str:
        """Id of the newest entry ever appended; ``LOG_ORIGIN`` for an empty log."""

    @abstractmethod
    def first_id(self) -> str | None:
        """Id of the oldest entry still kept (None when empty): detects trimmed gaps."""

    @abstractmethod
    def record_served(self, replica: str, watermark: str, ttl_s: float) -> None:
        """Say that ``replica`` serves a snapshot with ``watermark``, for ``ttl_s`` seconds."""

    @abstractmethod
    def oldest_served(self) -> str | None:
        """The lowest watermark any live replica serves; None when none has said."""

    @abstractmethod
    def trim_below(self, entry_id: str) -> int:
        """Drop entries with id < ``entry_id``; return how many went."""

    def trim_to_served(self) -> int:
        """Trim below the oldest watermark still served; nothing when no replica says."""
        oldest = self.oldest_served()
        if oldest is None or oldest == LOG_ORIGIN:
            return 0
        return self.trim_below(oldest)

    def ping(self) -> None:
        """One cheap round trip (readiness checks); raises when the log cannot be reached."""
        self.last_id()

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""
