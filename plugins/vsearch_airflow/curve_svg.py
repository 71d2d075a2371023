"""A snapshot's recall-latency curve as inline SVG, drawn on the server.

No script and no chart library: the page is HTML the API server renders, and an SVG
of a dozen points is a few hundred bytes. x is the search time per query (one
thread), y is recall@10; each point is one nprobe and is labelled with it. A dashed
line marks the target recall the validation gate checked, another the latency
budget when the build had one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

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


def _label(value: float) -> str:
    return f"{value:.3g}"


def _x_range(ms: list[float], budget_ms: float | None) -> float:
    """0 to a round number above the slowest point; the budget is included when it is
    near (a budget 1000x the measured times would squash every point onto the axis)."""
    hi = max(ms, default=0.0) * 1.15
    if budget_ms is not None and budget_ms <= 2 * hi:
        hi = max(hi, budget_ms * 1.05)
    hi = hi or 1.0
    step = _nice_step(hi, 5)
    return math.ceil(hi / step - 1e-9) * step


def curve_svg(
    points: Sequence[Point],
    *,
    target_recall: float | None = None,
    budget_ms: float | None = None,
    default_nprobe: int | None = None,
) -> str:
    """The ``<svg>`` element; one ``<g class="point">`` per entry of ``points``."""
    x_hi = _x_range([p[2] for p in points], budget_ms)
    recalls = [p[1] for p in points] + ([target_recall] if target_recall is not None else [])
    y_lo = min(0.95, max(0.0, math.floor((min(recalls, default=1.0) - 0.01) * 20) / 20))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    right, bottom = LEFT + plot_w, TOP + plot_h

    def x(v: float) -> float:
        return round(LEFT + v / x_hi * plot_w, 1)

    def y(v: float) -> float:
        return round(TOP + (1.0 - v) / (1.0 - y_lo) * plot_h, 1)

    def text(cls: str, tx: float, ty: float, anchor: str, label: str, extra: str = "") -> str:
        return (f'<text class="{cls}" x="{tx}" y="{ty}" text-anchor="{anchor}"{extra}>'
                f"{html.escape(label)}</text>")  # fmt: skip

    parts = [
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-label="recall@10 against milliseconds per query, one point per nprobe">',
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for v in _ticks(0.0, x_hi, 5):
        parts.append(f'<line class="grid" x1="{x(v)}" y1="{TOP}" x2="{x(v)}" y2="{bottom}"/>')
        parts.append(text("tick", x(v), bottom + 16, "middle", _label(v)))
    for v in _ticks(y_lo, 1.0, 5):
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(v)}" x2="{right}" y2="{y(v)}"/>')
        parts.append(text("tick", LEFT - 6, y(v) + 4, "end", _label(v)))
    parts.append(text("axis", LEFT + plot_w / 2, HEIGHT - 6, "middle", "ms per query (one thread)"))
    mid = TOP + plot_h / 2
    parts.append(text("axis", 14, mid, "middle", "recall@10", f' transform="rotate(-90 14 {mid})"'))
    if target_recall is not None:
        ty = y(target_recall)
        parts.append(f'<line class="target" x1="{LEFT}" y1="{ty}" x2="{right}" y2="{ty}"/>')
        parts.append(text("target-label", right - 4, ty + 14, "end",
                          f"target {_label(target_recall)}"))  # fmt: skip
    if budget_ms is not None:
        label = f"budget {_label(budget_ms)} ms"
        if budget_ms <= x_hi:
            bx = x(budget_ms)
            parts.append(f'<line class="budget" x1="{bx}" y1="{TOP}" x2="{bx}" y2="{bottom}"/>')
            parts.append(text("budget-label", bx - 4, bottom - 6, "end", label))
        else:  # off the scale, to the right
            parts.append(text("budget-label", right - 4, bottom - 6, "end", label + " \u2192"))
    line = " ".join(f"{x(p[2])},{y(p[1])}" for p in points)
    parts.append(f'<polyline class="line" points="{line}"/>')
    for nprobe, recall, ms_per_query in points:
        px, py = x(ms_per_query), y(recall)
        cls, r = ("point default", 6) if nprobe == default_nprobe else ("point", 4)
        title = f"nprobe {nprobe}: recall@10 {recall:.4f}, {ms_per_query:.4g} ms/query"
        parts.append(
            f'<g class="{cls}" data-nprobe="{int(nprobe)}"><title>{html.escape(title)}</title>'
            f'<circle cx="{px}" cy="{py}" r="{r}"/>'
            + text("nprobe", px + 8, py - 6, "start", str(int(nprobe)))
            + "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


CURVE_CSS = (
    "svg.curve{width:100%;max-width:560px;height:auto;font-size:12px;font-family:sans-serif}"
    ".curve .frame{fill:none;stroke:#999}.curve .grid{stroke:#eee}"
    ".curve .line{fill:none;stroke:#017cee;stroke-width:1.5}"
    ".curve .point circle{fill:#017cee}.curve .point.default circle{fill:#e65100}"
    ".curve .target,.curve .budget{stroke:#c62828;stroke-dasharray:5 4}"
    ".curve .target-label,.curve .budget-label{fill:#c62828}"
)
