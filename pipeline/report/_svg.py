"""Inline SVG charts for the run report: axes with ticks and labels, lines, steps and dots.

No JavaScript and no external resources: each chart is one ``<svg>`` element whose text is escaped.
Colours are the Okabe-Ito palette, which stays distinguishable under the common colour-vision
deficiencies; series also differ in mark (line, step line, dots) and dashing, not only in colour.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal

BLUE = "#0072B2"
ORANGE = "#E69F00"
SKY = "#56B4E9"
GREEN = "#009E73"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
YELLOW = "#F0E442"
GREY = "#7a7a7a"
UNCHANGED = 0.05  # score points: a smaller change counts as none
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, "#000000")

Kind = Literal["line", "step", "dots", "bars"]
Point = tuple[float, float]

_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 14, 30, 42


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """``line`` joins points, ``step`` holds each value until the next x; ``dots``; ``bars``
    rise from zero, ``width`` wide in x units."""

    label: str
    points: Sequence[Point]
    color: str
    kind: Kind = "line"
    dashed: bool = False
    opacity: float = 1.0
    width: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Axes:
    """Labels and size of one chart; the ranges fit the data (and ``extra_y``)."""

    x_label: str
    y_label: str
    width: int = 560
    height: int = 260
    y_prefix: str = ""
    integer_x: bool = True
    integer_y: bool = False
    description: str = ""
    extra_y: Sequence[float] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class _Scale:
    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        return self.start + (value - self.lo) / span * (self.end - self.start)


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering ``lo..hi``."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    step = float(max(1, math.ceil(step))) if integer else step
    first = math.floor(lo / step + 1e-9) * step
    count = math.ceil((hi - first) / step - 1e-9)
    return [round(first + i * step, 12) for i in range(count + 1)]


def _format_tick(value: float, ticks: Sequence[float], prefix: str) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step == 2.5 * 10.0 ** math.floor(math.log10(step)) and step < 10:
        decimals += 1
    return f"{prefix}{value:,.{decimals}f}"


def _extent(series: Sequence[Series], axis: int) -> list[float]:
    values = [p[axis] for s in series for p in s.points]
    return [min(values), max(values)] if values else [0.0, 1.0]


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _path(points: Sequence[Point], kind: Kind, sx: _Scale, sy: _Scale) -> str:
    coords: list[Point] = []
    for i, (x, y) in enumerate(points):
        if kind == "step" and i > 0:
            coords.append((x, points[i - 1][1]))
        coords.append((x, y))
    return "M" + "L".join(f"{_fmt(sx(x))},{_fmt(sy(y))}" for x, y in coords)


def _bars(s: Series, sx: _Scale, sy: _Scale) -> str:
    parts = []
    for x, y in s.points:
        left, right = sx(x - s.width * 0.45), sx(x + s.width * 0.45)
        top, base = sorted((sy(y), sy(0.0)))
        parts.append(
            f'<rect x="{_fmt(left)}" y="{_fmt(top)}" width="{_fmt(right - left)}" '
            f'height="{_fmt(base - top)}"/>'
        )
    return "".join(parts)


def _series_svg(s: Series, sx: _Scale, sy: _Scale) -> str:
    if not s.points:
        return ""
    if s.kind == "bars":
        return f'<g fill="{s.color}" fill-opacity="{s.opacity}">{_bars(s, sx, sy)}</g>'
    if s.kind == "dots":
        circles = "".join(
            f'<circle cx="{_fmt(sx(x))}" cy="{_fmt(sy(y))}" r="2.6"/>' for x, y in s.points
        )
        return f'<g fill="{s.color}" fill-opacity="{s.opacity}">{circles}</g>'
    dash = ' stroke-dasharray="5 4"' if s.dashed else ""
    return (
        f'<path d="{_path(s.points, s.kind, sx, sy)}" fill="none" stroke="{s.color}" '
        f'stroke-width="2" stroke-opacity="{s.opacity}" stroke-linejoin="round"{dash}/>'
    )


def _axis_x(ticks: Sequence[float], sx: _Scale, sy: _Scale, axes: Axes) -> str:
    base = sy.start
    parts = [f'<line x1="{sx.start}" y1="{base}" x2="{sx.end}" y2="{base}" class="ax"/>']
    for t in ticks:
        x = _fmt(sx(t))
        label = escape(_format_tick(t, ticks, ""))
        parts.append(f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}" class="ax"/>')
        parts.append(f'<text x="{x}" y="{base + 16}" text-anchor="middle">{label}</text>')
    mid = _fmt((sx.start + sx.end) / 2)
    parts.append(
        f'<text x="{mid}" y="{axes.height - 6}" text-anchor="middle" class="lab">'
        f"{escape(axes.x_label)}</text>"
    )
    return "".join(parts)


def _axis_y(ticks: Sequence[float], sx: _Scale, sy: _Scale, axes: Axes) -> str:
    parts = [f'<line x1="{sx.start}" y1="{sy.start}" x2="{sx.start}" y2="{sy.end}" class="ax"/>']
    for t in ticks:
        y = _fmt(sy(t))
        label = escape(_format_tick(t, ticks, axes.y_prefix))
        parts.append(f'<line x1="{sx.start}" y1="{y}" x2="{sx.end}" y2="{y}" class="grid"/>')
        parts.append(
            f'<text x="{sx.start - 6}" y="{y}" dy="0.32em" text-anchor="end">{label}</text>'
        )
    mid = _fmt((sy.start + sy.end) / 2)
    parts.append(
        f'<text transform="translate(14 {mid}) rotate(-90)" text-anchor="middle" class="lab">'
        f"{escape(axes.y_label)}</text>"
    )
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    parts: list[str] = []
    x = float(_LEFT)
    for s in series:
        if s.kind == "dots":
            mark = f'<circle cx="{_fmt(x + 8)}" cy="12" r="3.5" fill="{s.color}"/>'
        elif s.kind == "bars":
            mark = f'<rect x="{_fmt(x + 3)}" y="7" width="11" height="10" fill="{s.color}"/>'
        else:
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            mark = (
                f'<line x1="{_fmt(x)}" y1="12" x2="{_fmt(x + 18)}" y2="12" stroke="{s.color}" '
                f'stroke-width="2.5"{dash}/>'
            )
        parts.append(f'{mark}<text x="{_fmt(x + 23)}" y="12" dy="0.32em">{escape(s.label)}</text>')
        x += 23 + 6.6 * len(s.label) + 16
    return "".join(parts)


def chart(axes: Axes, series: Sequence[Series]) -> str:
    """One SVG chart; an empty string when no series has a point."""
    if not any(s.points for s in series):
        return ""
    x_lo, x_hi = _extent(series, 0)
    y_lo, y_hi = _extent(series, 1)
    y_lo, y_hi = min([y_lo, *axes.extra_y]), max([y_hi, *axes.extra_y])
    x_hi = max(x_hi, x_lo + 1)
    x_ticks = nice_ticks(x_lo, x_hi, 6, axes.integer_x)
    x_ticks = [t for t in x_ticks if x_lo - 1e-9 <= t <= x_hi + 1e-9]
    y_ticks = nice_ticks(y_lo, y_hi, 5, axes.integer_y)
    bars = max((s.width * 0.5 for s in series if s.kind == "bars"), default=0.0)
    pad = (x_hi - x_lo) * 0.02 + (0.2 if axes.integer_x else 0.0) + bars
    sx = _Scale(x_lo - pad, x_hi + pad, _LEFT, axes.width - _RIGHT)
    sy = _Scale(y_ticks[0], y_ticks[-1], axes.height - _BOTTOM, _TOP)
    body = "".join(_series_svg(s, sx, sy) for s in series)
    title = escape(axes.description or f"{axes.y_label} by {axes.x_label}")
    return (
        f'<svg class="chart" viewBox="0 0 {axes.width} {axes.height}" width="{axes.width}" '
        f'height="{axes.height}" role="img" aria-label="{title}"><title>{title}</title>'
        f"{_axis_y(y_ticks, sx, sy, axes)}{_axis_x(x_ticks, sx, sy, axes)}{body}"
        f"{_legend(series)}</svg>"
    )


# --- reading loosely typed JSON ----------------------------------------------------------


def num(obj: object, key: str) -> float | None:
    """``obj[key]`` as a finite float, or ``None`` when absent or not a number."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def text(obj: object, key: str, default: str = "") -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else default


def rows(obj: object, key: str) -> list[dict[str, Any]]:
    """``obj[key]`` as a list of objects; anything else in it is skipped."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --- the report's charts -----------------------------------------------------------------

Counters = dict[str, dict[str, float]]
Sample = tuple[float, Counters]


def selected_points(job: dict[str, Any]) -> list[Point]:
    """(step, dev score of the selected prompt), from the trajectory or else the step records."""
    points = _points(rows(job, "trajectory"), "score")
    if points:
        return points
    start = num(job, "initial_dev_score")
    head = [(0.0, start)] if start is not None else []
    return head + _points(rows(job, "step_records"), "selected_score")


def _points(objs: Sequence[dict[str, Any]], y_key: str) -> list[Point]:
    pairs = ((num(o, "step"), num(o, y_key)) for o in objs)
    return [(x, y) for x, y in pairs if x is not None and y is not None]


def best_so_far(points: Sequence[Point]) -> list[Point]:
    best: list[Point] = []
    for x, y in points:
        best.append((x, max(y, best[-1][1]) if best else y))
    return best


def score_chart(job: dict[str, Any]) -> str:
    """Dev score per step: the selected prompt, the best so far and every candidate (faint)
    scored on the whole dev split (racing's stopped ones have partial scores only)."""
    selected = selected_points(job)
    candidates = [
        (step, score)
        for r in rows(job, "step_records")
        for step in [num(r, "step")]
        for c in rows(r, "candidates")
        for score in [num(c, "score")]
        if step is not None and score is not None and c.get("raced_out") is not True
    ]
    series = [
        Series(label="candidates", points=_jitter(candidates), color=SKY, kind="dots", opacity=0.6),
        Series(label="selected", points=selected, color=BLUE),
        Series(label="best so far", points=best_so_far(selected), color=ORANGE, kind="step"),
    ]
    axes = Axes(x_label="step", y_label="dev score (0-100)", description="dev score by step")
    return chart(axes, series)


def _jitter(points: Sequence[Point]) -> list[Point]:
    """Spread dots that share a step sideways a little so they do not hide each other."""
    seen: dict[float, int] = {}
    out: list[Point] = []
    for x, y in points:
        i = seen[x] = seen.get(x, -1) + 1
        out.append((x + ((i % 7) - 3) * 0.045, y))
    return out


def edit_chart(job: dict[str, Any]) -> str:
    """Candidates' edit distances (words changed) per step against the word budget."""
    within: list[Point] = []
    over: list[Point] = []
    budget: list[Point] = []
    for r in rows(job, "step_records"):
        step, limit = num(r, "step"), num(r, "word_budget")
        if step is None:
            continue
        if limit is not None:
            budget.append((step, limit))
        for c in rows(r, "candidates"):
            distance = num(c, "edit_distance")
            if distance is not None:
                (over if c.get("over_budget") is True else within).append((step, distance))
    series = [
        Series(label="within budget", points=_jitter(within), color=BLUE, kind="dots", opacity=0.6),
        Series(label="over budget", points=_jitter(over), color=VERMILLION, kind="dots"),
        Series(label="word budget", points=budget, color=GREY, kind="step", dashed=True),
    ]
    axes = Axes(x_label="step", y_label="words changed", description="edit distance by step")
    return chart(axes, series)


def _time_unit(samples: Sequence[Sample]) -> tuple[float, str]:
    end = samples[-1][0] if samples else 0.0
    if end > 7200:
        return 3600.0, "hours"
    return (60.0, "minutes") if end > 120 else (1.0, "seconds")


def endpoint_chart(samples: Sequence[Sample], key: str, y_label: str, prefix: str = "") -> str:
    """One line per endpoint of a cumulative counter from the journal's stats samples."""
    scale, unit = _time_unit(samples)
    names = sorted({name for _, eps in samples for name in eps})
    series = [
        Series(
            label=name,
            points=[(t / scale, eps[name][key]) for t, eps in samples if key in eps.get(name, {})],
            color=PALETTE[i % len(PALETTE)],
            dashed=i >= len(PALETTE),
        )
        for i, name in enumerate(names)
    ]
    axes = Axes(
        x_label=f"time since start ({unit})",
        y_label=y_label,
        width=400,
        height=240,
        y_prefix=prefix,
        integer_x=False,
        integer_y=key != "cost_usd",
        extra_y=(0.0,),
        description=f"{y_label} over time",
    )
    return chart(axes, series)


def gain_histogram(gains: Sequence[float], x_label: str) -> str:
    """How many jobs gained (or lost) how many points: bins with an edge at zero, and the jobs
    whose score did not move as a thin grey bar on zero."""
    if not gains:
        return ""
    ticks = nice_ticks(min(gains), max(gains), 14)
    width = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    up = _bins([g for g in gains if g >= UNCHANGED], width, math.floor, 0.5)
    down = _bins([g for g in gains if g <= -UNCHANGED], width, math.ceil, -0.5)
    flat = sum(abs(g) < UNCHANGED for g in gains)
    series = [
        Series(label="improved", points=up, color=GREEN, kind="bars", width=width),
        Series(label="unchanged", points=[(0.0, flat)] if flat else [], color=GREY, kind="bars"),
        Series(label="regressed", points=down, color=VERMILLION, kind="bars", width=width),
    ]
    series[1] = dataclasses.replace(series[1], width=width * 0.12)
    axes = Axes(
        x_label=x_label,
        y_label="jobs",
        width=560,
        height=220,
        integer_x=False,
        integer_y=True,
        extra_y=(0.0,),
        description="jobs by score change",
    )
    return chart(axes, series)


def _bins(
    gains: Sequence[float], width: float, edge: Callable[[float], int], shift: float
) -> list[Point]:
    counts: dict[float, int] = {}
    for gain in gains:
        centre = (edge(gain / width) + shift) * width
        counts[centre] = counts.get(centre, 0) + 1
    return [(x, float(n)) for x, n in sorted(counts.items())]
