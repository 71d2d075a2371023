"""A snapshot's recall-latency curve as inline SVG, drawn on the server.

No script and no chart library: the page is HTML the API server renders, and an SVG
of a dozen points is a few hundred bytes. x is the search time per query (one
thread), y is recall@10; each point is one nprobe and is labelled with it. A dashed
line marks the target recall the validation gate checked, another the latency
budget when the build had one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vsearch_airflow.html_templates import render

# (nprobe, recall@10, ms per query): the manifest's ``recall.curve`` rows and the
# report's ``curve`` points both read as this.
Point = tuple[int, float, float]

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 20, 44


def _nice_step(span: float, max_ticks: int) -> float:
    """The smallest 1-2-5 step that cuts ``span`` into at most ``max_ticks`` parts."""
    raw = span / max_ticks
    scale = 10.0 ** math.floor(math.log10(raw))
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= raw)


def _ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    step = _nice_step(hi - lo, max_ticks)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 10) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def _x_range(ms: list[float], budget_ms: float | None) -> float:
    """0 to a round number above the slowest point; the budget is included when it is
    near (a budget 1000x the measured times would squash every point onto the axis)."""
    hi = max(ms, default=0.0) * 1.15
    if budget_ms is not None and budget_ms <= 2 * hi:
        hi = max(hi, budget_ms * 1.05)
    hi = hi or 1.0
    step = _nice_step(hi, 5)
    return math.ceil(hi / step - 1e-9) * step


@dataclass(frozen=True)
class Axes:
    """Where the plot area lies in the ``<svg>``, and the data ranges it shows."""

    x_hi: float  # ms per query at the right edge (the left one is 0)
    y_lo: float  # recall at the bottom edge (the top one is 1)
    left: int = LEFT
    top: int = TOP
    plot_w: int = WIDTH - LEFT - RIGHT
    plot_h: int = HEIGHT - TOP - BOTTOM

    @property
    def right(self) -> int:
        return self.left + self.plot_w

    @property
    def bottom(self) -> int:
        return self.top + self.plot_h

    def x(self, ms: float) -> float:
        return round(self.left + ms / self.x_hi * self.plot_w, 1)

    def y(self, recall: float) -> float:
        return round(self.top + (1.0 - recall) / (1.0 - self.y_lo) * self.plot_h, 1)


def curve_svg(
    points: Sequence[Point],
    *,
    target_recall: float | None = None,
    budget_ms: float | None = None,
    default_nprobe: int | None = None,
) -> str:
    """The ``<svg>`` element (``templates/curve.svg``); one ``<g class="point">`` per
    entry of ``points``."""
    x_hi = _x_range([p[2] for p in points], budget_ms)
    recalls = [p[1] for p in points] + ([target_recall] if target_recall is not None else [])
    y_lo = min(0.95, max(0.0, math.floor((min(recalls, default=1.0) - 0.01) * 20) / 20))
    axes = Axes(x_hi, y_lo)
    return render(
        "curve.svg",
        width=WIDTH,
        height=HEIGHT,
        a=axes,
        x_ticks=_ticks(0.0, x_hi, 5),
        y_ticks=_ticks(y_lo, 1.0, 5),
        target_recall=target_recall,
        budget_ms=budget_ms,
        line=" ".join(f"{axes.x(ms)},{axes.y(rec)}" for _, rec, ms in points),
        # float(): a recall of 1 in a manifest still reads "1.0000" in the tooltip.
        points=[(n, float(rec), ms, n == default_nprobe) for n, rec, ms in points],
    )
