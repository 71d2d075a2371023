"""The index settings of one build, in one frozen object: ``IndexOptions``.

Built once from ``Settings`` (``IndexOptions.from_settings``), then narrowed by what a
DAG run's params or the CLI's options say (``with_overrides``), and passed down to
training, spec selection and validation whole. Every default is the ``Settings``
default (``VSEARCH_INDEX_*``), written once in ``vsearch.config``; ``IndexOptions()``
holds those defaults without reading the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, TypedDict, Unpack, cast

from vsearch.config import Settings
from vsearch.index.spec import DEFAULT_K_FACTOR, Metric

Device = Literal["auto", "cpu", "gpu"]
METRICS: Final = ("ip", "l2")
DEVICES: Final = ("auto", "cpu", "gpu")
_DEFAULT_DEVICE: Final = cast(Device, Settings.index_device)

# Overrides that mean "the default" when 0 or empty, as the CLI and the DAG always had it.
_FALSY_IS_DEFAULT: Final = frozenset(
    {"factory", "bytes_per_vector", "max_query_ms", "nshards", "device", "target_recall"}
)


class IndexOverrides(TypedDict, total=False):
    """What a DAG run's params or the CLI's options may set; None keeps the setting."""

    factory: str | None
    bytes_per_vector: float | None
    max_query_ms: float | None
    memory_floor_mb: float | None
    nshards: int | None
    seed: int | None
    metric: str | None
    device: str | None
    nq: int | None
    target_recall: float | None
    k_factor: int | None


@dataclass(frozen=True)
class IndexOptions:
    """How to choose, train and gate a snapshot's index (see ``vsearch.index.spec``)."""

    # Explicit faiss factory string; None: chosen from the budgets below.
    factory: str | None = None
    # Resident bytes per vector, ms per query and shard on one core, and the resident
    # MiB under which memory is never a reason to compress.
    bytes_per_vector: float = Settings.index_bytes_per_vector
    max_query_ms: float = Settings.index_max_query_ms
    memory_floor_mb: float = Settings.index_memory_floor_mb
    nshards: int = Settings.index_nshards
    seed: int = Settings.index_seed
    # None: detected from the vectors (normalised: "ip", else "l2").
    metric: Metric | None = None
    # Where k-means runs.
    device: Device = _DEFAULT_DEVICE
    # Held-out image queries reserved at training for validation.
    nq: int = 1000
    # The recall gate: recall@10 at the default nprobe, for every query kind.
    target_recall: float = Settings.index_target_recall
    # Re-ranking shortlist: k_factor * k candidates from the compressed scan.
    k_factor: int = DEFAULT_K_FACTOR

    def __post_init__(self) -> None:
        if self.metric not in (None, *METRICS):
            raise ValueError(f"metric must be ip or l2, got {self.metric!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be auto, cpu or gpu, got {self.device!r}")
        if self.k_factor < 1:
            raise ValueError(f"k_factor must be >= 1, got {self.k_factor}")

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexOptions:
        """The ``VSEARCH_INDEX_*`` settings."""
        return cls(
            factory=settings.index_factory or None,
            bytes_per_vector=settings.index_bytes_per_vector,
            max_query_ms=settings.index_max_query_ms,
            memory_floor_mb=settings.index_memory_floor_mb,
            nshards=settings.index_nshards,
            seed=settings.index_seed,
            device=cast(Device, settings.index_device),
            target_recall=settings.index_target_recall,
        )

    def with_overrides(self, **overrides: Unpack[IndexOverrides]) -> IndexOptions:
        """These options with every override that is given (not None) applied, checked."""
        given = {
            name: value
            for name, value in overrides.items()
            if value is not None and (value or name not in _FALSY_IS_DEFAULT)
        }
        return dataclasses.replace(self, **given) if given else self  # type: ignore[arg-type]
