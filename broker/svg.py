"""Charts as inline SVG text, for the HTML report (``ftbroker.report_html``): a line chart, a log-log scatter and
grouped bars. Pure: plain numbers in, markup out; every text is escaped here.

Drawn in Python rather than in the browser so the report needs no script and no library from the network. Each
chart scales to its container (``viewBox``, no fixed width), so it fits a phone as well as a page; a point's
``<title>`` is its tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 560, 340  # in viewBox units; the page scales it (a phone shows it at ~0.65)
MARGIN = {"left": 62, "right": 14, "top": 30, "bottom": 48}
PALETTE = ("#2c7bb6", "#d7191c", "#1a9641", "#7b3294", "#fdae61", "#555555")


@dataclass(frozen=True)
class Series:
    """One line (or a set of points): ``points`` are (x, y); ``tips`` the tooltip of each point, if any."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]
    line: bool = True
    marker: str = "circle"  # circle | square | star | triangle | none
    hollow: Sequence[bool] = ()  # per point: drawn hollow (e.g. a price in doubt)
    tips: Sequence[str] = ()
    dashed: bool = False


@dataclass(frozen=True)
class Rule:
    """A horizontal (``axis="y"``) or vertical (``axis="x"``) line across the plot, with its label."""

    axis: str
    value: float
    label: str
    colour: str = "#d7191c"


@dataclass(frozen=True)
class Axes:
    x_label: str
    y_label: str
    log_x: bool = False
    log_y: bool = False
    x_range: tuple[float, float] | None = None  # else the data's
    y_range: tuple[float, float] | None = None
    rules: Sequence[Rule] = field(default_factory=tuple)


class _Scale:
    """Data -> pixels along one axis, linear or logarithmic, with ticks a person reads easily."""

    def __init__(self, low: float, high: float, start: float, end: float, log: bool):
        self.log = log
        if log:  # out to the nearest 1, 2 or 5 x 10^k on each side
            low, high = math.log10(_log_step(low, math.floor)), math.log10(_log_step(high, math.ceil))
        elif low == high:
            low, high = low - 1, high + 1
        else:
            low, high = _nice_bounds(low, high)
        self.low, self.high = (low, high if high > low else low + 1)
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.start + (v - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:  # 1-2-5 within three decades, else the decades alone
            steps = (1, 2, 5) if self.high - self.low <= 3 else (1,)
            found = [m * 10.0 ** k for k in range(math.floor(self.low), math.ceil(self.high) + 1) for m in steps]
            return [(v, f"{v:g}") for v in found if self.low - 1e-9 <= math.log10(v) <= self.high + 1e-9]
        step = _nice_step((self.high - self.low) / 5)
        first = math.ceil(self.low / step - 1e-9) * step
        count = math.floor((self.high - first) / step + 1e-9) + 1
        return [(first + i * step, f"{first + i * step:g}") for i in range(count)]


def _log_step(value: float, rounding) -> float:
    """``value`` rounded down (``math.floor``) or up (``math.ceil``) to 1, 2 or 5 x 10^k."""
    power = 10.0 ** math.floor(math.log10(value))
    marks = [m * power for m in (1, 2, 5, 10)]
    if rounding is math.floor:
        return max(m for m in marks if m <= value * (1 + 1e-9))
    return min(m for m in marks if m >= value * (1 - 1e-9))


def _nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _nice_bounds(low: float, high: float) -> tuple[float, float]:
    step = _nice_step((high - low) / 5)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _bounds(values: list[float], log: bool, given: tuple[float, float] | None) -> tuple[float, float]:
    if given:
        return given
    values = [v for v in values if v > 0] if log else values
    if not values:
        return (0.1, 10.0) if log else (0.0, 1.0)
    return min(values), max(values)


def plot(series: Sequence[Series], axes: Axes, *, title: str, label: str) -> str:
    """A chart of ``series`` on ``axes``: a line chart, or a scatter where no series is a line. ``label`` says what
    it shows to a screen reader."""
    xs = [x for s in series for x, _ in s.points] + [r.value for r in axes.rules if r.axis == "x"]
    ys = [y for s in series for _, y in s.points] + [r.value for r in axes.rules if r.axis == "y"]
    sx = _Scale(*_bounds(xs, axes.log_x, axes.x_range), MARGIN["left"], WIDTH - MARGIN["right"], axes.log_x)
    sy = _Scale(*_bounds(ys, axes.log_y, axes.y_range), HEIGHT - MARGIN["bottom"], MARGIN["top"], axes.log_y)
    parts = [_grid(sx, sy, axes)]
    parts += [_rule(rule, sx, sy) for rule in axes.rules]
    parts += [_series(s, sx, sy) for s in series]
    return _svg(title, label, parts)


def _svg(title: str, label: str, parts: Sequence[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
            f'<text class="title" x="{WIDTH / 2}" y="19" text-anchor="middle">{escape(title)}</text>'
            + "".join(parts) + "</svg>")


def _grid(sx: _Scale, sy: _Scale, axes: Axes) -> str:
    out = [_frame(sx, sy), _y_ticks(sy, sx)]
    for value, text in sx.ticks():
        x = sx(value)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{sy.end}" x2="{x:.1f}" y2="{sy.start}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{sy.start + 17}" text-anchor="middle">{escape(text)}</text>')
    out.append(f'<text class="axis" x="{(sx.start + sx.end) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
               f'{escape(axes.x_label)}</text>')
    out.append(_y_label(sy, axes.y_label))
    return "".join(out)


def _frame(sx: _Scale, sy: _Scale) -> str:
    return (f'<rect class="plot" x="{sx.start}" y="{sy.end}" width="{sx.end - sx.start}" '
            f'height="{sy.start - sy.end}"/>')


def _y_ticks(sy: _Scale, sx: _Scale) -> str:
    return "".join(f'<line class="grid" x1="{sx.start}" y1="{sy(v):.1f}" x2="{sx.end}" y2="{sy(v):.1f}"/>'
                   f'<text class="tick" x="{sx.start - 6}" y="{sy(v) + 5:.1f}" text-anchor="end">{escape(t)}</text>'
                   for v, t in sy.ticks())


def _y_label(sy: _Scale, text: str) -> str:
    return (f'<text class="axis" transform="translate(16 {(sy.start + sy.end) / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(text)}</text>')


def _rule(rule: Rule, sx: _Scale, sy: _Scale) -> str:
    if rule.axis == "y":
        y = sy(rule.value)
        return (f'<line class="rule" x1="{sx.start}" y1="{y:.1f}" x2="{sx.end}" y2="{y:.1f}" stroke="{rule.colour}"/>'
                f'<text class="note" x="{sx.end - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{rule.colour}">'
                f'{escape(rule.label)}</text>')
    x = sx(rule.value)
    return (f'<line class="rule" x1="{x:.1f}" y1="{sy.end}" x2="{x:.1f}" y2="{sy.start}" stroke="{rule.colour}"/>'
            f'<text class="note" x="{x + 4:.1f}" y="{sy.end + 12}" fill="{rule.colour}">{escape(rule.label)}</text>')


def _series(series: Series, sx: _Scale, sy: _Scale) -> str:
    pixels = [(sx(x), sy(y)) for x, y in series.points
              if (x > 0 or not sx.log) and (y > 0 or not sy.log)]
    out = [f'<g class="series" data-name="{escape(series.name)}">']
    if series.line and len(pixels) > 1:
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pixels)
        dash = ' stroke-dasharray="6 4"' if series.dashed else ""
        out.append(f'<path d="{path}" fill="none" stroke="{series.colour}" stroke-width="2"{dash}/>')
    if series.marker != "none":
        for i, (x, y) in enumerate(pixels):
            hollow = i < len(series.hollow) and series.hollow[i]
            tip = f"<title>{escape(series.tips[i])}</title>" if i < len(series.tips) else ""
            out.append(_marker(series.marker, x, y, series.colour, hollow, tip))
    out.append("</g>")
    return "".join(out)


def _marker(shape: str, x: float, y: float, colour: str, hollow: bool, tip: str) -> str:
    fill = "none" if hollow else colour
    paint = f'fill="{fill}" stroke="{colour}" stroke-width="1.2" class="point"'
    if shape == "square":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" {paint}>{tip}</rect>'
    if shape in ("triangle", "star"):
        r = 6.5 if shape == "star" else 5
        corners = 5 if shape == "star" else 3
        return f'<polygon points="{_star(x, y, r, corners)}" {paint}>{tip}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" {paint}>{tip}</circle>'


def _star(x: float, y: float, r: float, corners: int) -> str:
    """A triangle (3 corners) or a five-pointed star (5), pointing up."""
    if corners == 3:
        angles = [-90, 30, 150]
        return " ".join(f"{x + r * math.cos(math.radians(a)):.1f},{y + r * math.sin(math.radians(a)):.1f}"
                        for a in angles)
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        a = math.radians(-90 + 36 * i)
        points.append(f"{x + radius * math.cos(a):.1f},{y + radius * math.sin(a):.1f}")
    return " ".join(points)


def bars(categories: Sequence[str], groups: Sequence[Series], *, title: str, label: str, y_label: str,
         y_max: float = 1.0) -> str:
    """Grouped bars from 0 to ``y_max``: one group per category, one bar per series (its ``points``' y, in the
    categories' order; x is ignored)."""
    sy = _Scale(0.0, y_max, HEIGHT - MARGIN["bottom"], MARGIN["top"], False)
    sx = _Scale(0.0, 1.0, MARGIN["left"], WIDTH - MARGIN["right"], False)
    left, right = sx.start, sx.end
    slot = (right - left) / max(1, len(categories))
    width = slot * 0.7 / max(1, len(groups))
    parts = [_frame(sx, sy), _y_ticks(sy, sx), _y_label(sy, y_label)]
    for i, category in enumerate(categories):
        centre = left + slot * (i + 0.5)
        parts.append(f'<text class="tick" x="{centre:.1f}" y="{HEIGHT - MARGIN["bottom"] + 17}" '
                     f'text-anchor="middle">{escape(category)}</text>')
        for j, group in enumerate(groups):
            value = group.points[i][1] if i < len(group.points) else None
            if value is None:
                continue
            x = centre - slot * 0.35 + j * width
            top = sy(min(max(value, 0.0), y_max))
            tip = escape(group.tips[i] if i < len(group.tips) else f"{group.name}: {value:g}")
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{width - 2:.1f}" '
                         f'height="{sy.start - top:.1f}" fill="{group.colour}"><title>{tip}</title></rect>')
    return _svg(title, label, parts)


def legend(series: Sequence[Series]) -> str:
    """An HTML legend (wraps on a narrow screen, unlike text inside the SVG)."""
    items = "".join(f'<li><span class="swatch" style="background:{s.colour}"></span>{escape(s.name)}</li>'
                    for s in series)
    return f'<ul class="legend">{items}</ul>'
