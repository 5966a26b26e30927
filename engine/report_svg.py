"""The charts of the run page as inline SVG: funnel, timeline, latency histogram, failures.

Pure; every text that comes from the database is escaped (the daemon serves the page).
"""

from __future__ import annotations

from datetime import timedelta
from html import escape

from engine.report_charts import Reason, Step, Timeline

WIDTH = 1000
COLOURS = {
    "recipients": "#64748b",
    "queued": "#6366f1",
    "sent": "#3b82f6",
    "delivered": "#16a34a",
    "read": "#0d9488",
    "failed": "#dc2626",
    "skipped": "#9ca3af",
    "bar": "#3b82f6",
}


def _svg(ident: str, height: int, label: str, marks: list[str]) -> str:
    return (
        f'<svg class="chart" id="{ident}-chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(marks)}</svg>"
    )


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, colour: str, tip: str) -> str:
    return (
        f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" '
        f'height="{h:.1f}" fill="{colour}" data-tip="{escape(tip)}">'
        f"<title>{escape(tip)}</title></rect>"
    )


def _empty(ident: str, label: str, message: str) -> str:
    return _svg(ident, 80, label, [_text(WIDTH / 2, 45, message, "empty", "middle")])


def share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``."""
    return f"{part / whole:.1%}" if whole else "-"


# funnel: one bar per step, scaled to the first step, with the losses written beneath it


def funnel_svg(steps: tuple[Step, ...]) -> str:
    """Horizontal bars for the funnel's steps, each step's losses beneath its bar."""
    label = "Delivery funnel"
    if not steps or steps[0].messages == 0:
        return _empty("funnel", label, "No recipients")
    top, row = steps[0].messages, 64
    marks: list[str] = []
    for i, step in enumerate(steps):
        y = 10 + i * row
        width = 640 * step.messages / top
        colour = COLOURS.get(step.label, COLOURS["bar"])
        tip = f"{step.label}: {step.messages:,} ({share(step.messages, top)} of recipients)"
        marks.append(_text(110, y + 21, step.label, "label", "end"))
        marks.append(_rect(120, y, width, 30, colour, tip))
        marks.append(
            _text(128 + width, y + 21, f"{step.messages:,}  {share(step.messages, top)}", "value")
        )
        if step.losses:
            lost = sum(n for _, n in step.losses)
            why = ", ".join(f"{n:,} {reason}" for reason, n in step.losses)
            marks.append(_text(120, y + 48, f"− {lost:,} lost before {step.label}: {why}", "loss"))
    return _svg("funnel", 10 + len(steps) * row, label, marks)


# timeline: one line per kind of event over equal time buckets

_PLOT = (70.0, 34.0, 980.0, 250.0)  # left, top, right, bottom


def timeline_svg(timeline: Timeline | None) -> str:
    """Lines of messages sent, delivered, read and failed per time bucket."""
    label = "Sends and receipts over time"
    if timeline is None or not timeline.series:
        return _empty("timeline", label, "Nothing sent yet")
    left, top, right, bottom = _PLOT
    buckets = max(len(s.counts) for s in timeline.series)
    peak = max(max(s.counts) for s in timeline.series) or 1
    step = (right - left) / max(buckets - 1, 1)
    marks = _y_axis(peak, top, bottom, left, right) + _x_axis(timeline, buckets, step)
    legend_x = left
    for series in timeline.series:
        colour = COLOURS.get(series.name, COLOURS["bar"])
        points = [
            (left + i * step, bottom - (bottom - top) * c / peak)
            for i, c in enumerate(series.counts)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        marks.append(
            f'<polyline class="mark line" points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        if buckets <= 60:  # few points: dots make single buckets visible, with tooltips
            marks += [
                _dot(x, y, colour, f"{series.name} {_when(timeline, i)}: {c:,}")
                for i, ((x, y), c) in enumerate(zip(points, series.counts, strict=True))
            ]
        legend = _legend(legend_x, series.name, colour, sum(series.counts))
        marks.append(legend[0])
        legend_x += legend[1]
    caption = f"messages per {_duration(timeline.bucket)}, times in UTC"
    marks.append(_text(right, 296, caption, "muted", "end"))
    return _svg("timeline", 300, label, marks)


def _dot(x: float, y: float, colour: str, tip: str) -> str:
    return (
        f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" '
        f'data-tip="{escape(tip)}"><title>{escape(tip)}</title></circle>'
    )


def _legend(x: float, name: str, colour: str, total: int) -> tuple[str, float]:
    """A legend entry and the width it takes (about 7 px a character at 13 px)."""
    text = f"{name} ({total:,})"
    mark = f'<rect x="{x:.1f}" y="4" width="10" height="10" fill="{colour}"/>' + _text(
        x + 14, 13, text, "legend"
    )
    return mark, 14 + 7.5 * len(text) + 18


def _y_axis(peak: int, top: float, bottom: float, left: float, right: float) -> list[str]:
    marks = []
    for fraction in (0, 0.5, 1):
        y = bottom - (bottom - top) * fraction
        marks.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        marks.append(_text(left - 6, y + 4, f"{round(peak * fraction):,}", "tick", "end"))
    return marks


def _x_axis(timeline: Timeline, buckets: int, step: float) -> list[str]:
    left, _, _, bottom = _PLOT
    ticks = sorted({round(i * (buckets - 1) / 5) for i in range(6)}) if buckets > 1 else [0]
    last = ticks[-1]

    def anchor(i: int) -> str:  # the outer labels stay inside the chart
        return "start" if i == 0 and last else "end" if i == last and last else "middle"

    return [
        _text(left + i * step, bottom + 18, _when(timeline, i), "tick", anchor(i)) for i in ticks
    ]


def _when(timeline: Timeline, index: int) -> str:
    at = timeline.start + timeline.bucket * index
    span = timeline.bucket * len(timeline.series[0].counts)
    if timeline.bucket < timedelta(minutes=1):  # buckets of seconds: say which second
        return at.strftime("%H:%M:%S")
    return at.strftime("%m-%d %H:%M" if span > timedelta(hours=20) else "%H:%M")


def _duration(delta: timedelta) -> str:
    """``second``, ``5 seconds``, ``minute``, ``2 hours``...: a bucket's size in words."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


# histogram: delivered messages per latency bin


def histogram_svg(bins: tuple[tuple[str, int], ...]) -> str:
    """Vertical bars: delivered messages per time-to-delivery bin."""
    label = "Time from send to delivery"
    total = sum(n for _, n in bins)
    if not total:
        return _empty("latency", label, "No delivery receipts yet")
    left, top, right, bottom = _PLOT
    peak = max(n for _, n in bins)
    slot = (right - left) / len(bins)
    marks = _y_axis(peak, top, bottom, left, right)
    for i, (name, n) in enumerate(bins):
        height = (bottom - top) * n / peak
        x = left + i * slot
        tip = f"{name}: {n:,} ({share(n, total)})"
        marks.append(_rect(x + 4, bottom - height, slot - 8, height, COLOURS["delivered"], tip))
        marks.append(_text(x + slot / 2, bottom + 16, name, "tick", "middle"))
        if n:
            marks.append(
                _text(x + slot / 2, bottom - height - 4, share(n, total), "tick", "middle")
            )
    marks.append(_text(right, 290, f"{total:,} delivered messages with both times", "muted", "end"))
    return _svg("latency", 296, label, marks)


# failures: one horizontal bar per reason


def failures_svg(reasons: tuple[Reason, ...]) -> str:
    """Horizontal bars: messages not delivered, per status, code and account."""
    label = "Failures by reason"
    if not reasons:
        return _empty("failures", label, "No failures")
    peak, row = max(r.messages for r in reasons), 28
    marks: list[str] = []
    for i, reason in enumerate(reasons):
        y = 6 + i * row
        width = 560 * reason.messages / peak
        colour = COLOURS["skipped" if reason.skipped else "failed"]
        tip = f"{reason.label} on {reason.account}: {reason.messages:,}"
        if reason.detail:
            tip += f" — e.g. {reason.detail}"
        marks.append(
            _text(330, y + 16, _clip(f"{reason.label} ({reason.account})", 48), "label", "end")
        )
        marks.append(_rect(340, y, width, 20, colour, tip))
        marks.append(_text(346 + width, y + 15, f"{reason.messages:,}", "value"))
    legend = "red: failed after expansion · grey: skipped at expansion (never sent)"
    marks.append(_text(340, 20 + len(reasons) * row, legend, "muted"))
    return _svg("failures", 28 + len(reasons) * row, label, marks)


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


# tables
