"""What the search modules share: watermarks, hits, the recall-curve lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Source = Literal["base", "delta"]


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    source: Source


def nprobe_for_recall(curve: Sequence[Sequence[float]], target: float, default: int) -> int:
    """Smallest nprobe of the recall curve reaching ``target``; the largest one if none does."""
    points = sorted((int(p[0]), float(p[1])) for p in curve)
    if not points:
        return default
    for nprobe, recall in points:
        if recall >= target:
            return nprobe
    return points[-1][0]
