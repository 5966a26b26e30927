"""The chart page of one campaign run: a single HTML document that needs no network.

Pure: :func:`render_page` turns a :class:`PageData` (gathered by
:func:`engine.reports.report_html`) into HTML with inline CSS, inline SVG drawn here, and
a few lines of inline JavaScript for tooltips. The charts are:

- the delivery funnel: recipients → queued → sent → delivered → read, with what was lost
  at each step and why; the read step only on channels with read receipts (not SMS);
- sends and receipts over time (messages accepted, delivered, read and failed per bucket,
  of seconds for a run of a minute, up to days for a long one);
- the time-to-delivery distribution (a histogram on a roughly logarithmic scale);
- failures by reason (status, provider code and account).

Every text that comes from the database (campaign names, provider error details) is
escaped: the daemon serves this page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

# --- the data a page shows --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the funnel, and what was lost on the way to it (reason, messages)."""

    label: str
    messages: int
    losses: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Series:
    """Messages per time bucket for one kind of event (sent, delivered, read, failed)."""

    name: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    """Event counts in equal buckets from ``start``."""

    start: datetime
    bucket: timedelta
    series: tuple[Series, ...]


@dataclass(frozen=True, slots=True)
class Reason:
    """One bar of the failures chart."""

    status: str
    code: str | None
    account: str
    messages: int
    skipped: bool
    detail: str | None

    @property
    def label(self) -> str:
        """``status · code`` (the code only when there is one)."""
        return f"{self.status} · {self.code}" if self.code else self.status


@dataclass(frozen=True, slots=True)
class PageData:
    """Everything one page shows; ``run_id`` is None for a campaign with no runs yet."""

    campaign: str
    run_id: int | None
    runs: int
    generated_at: datetime
    summary: tuple[tuple[str, str], ...] = ()
    statuses: tuple[tuple[str, int], ...] = ()
    funnel: tuple[Step, ...] = ()
    timeline: Timeline | None = None
    histogram: tuple[tuple[str, int], ...] = ()
    failures: tuple[Reason, ...] = ()


# --- drawing ------------------------------------------------------------------------------

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


def render_page(data: PageData) -> str:
    """The whole HTML document."""
    title = f"{data.campaign}: run {data.run_id}" if data.run_id else data.campaign
    return _DOCUMENT.format(
        title=escape(title),
        style=_STYLE,
        script=_SCRIPT,
        header=_header(data),
        body=_body(data) if data.run_id is not None else _NO_RUNS,
    )


def _header(data: PageData) -> str:
    figures = "".join(
        f'<div class="figure"><span>{escape(k)}</span><b>{escape(v)}</b></div>'
        for k, v in data.summary
    )
    note = f"run {data.run_id} of {data.runs}" if data.run_id else "no runs yet"
    generated = data.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<header><h1>{escape(data.campaign)}</h1>"
        f'<p class="muted">{escape(note)} · generated {generated}</p>'
        f'<div class="figures">{figures}</div></header>'
    )


def _body(data: PageData) -> str:
    sections = [
        _section("Delivery funnel", "funnel", funnel_svg(data.funnel)),
        _section("Sends and receipts over time", "timeline", timeline_svg(data.timeline)),
        _section("Time to delivery", "latency", histogram_svg(data.histogram)),
        _section("Failures by reason", "failures", failures_svg(data.failures)),
        _section("Messages by status", "statuses", _status_table(data.statuses)),
        _section("Failure details", "details", _failure_table(data.failures)),
    ]
    return "\n".join(sections)


def _section(title: str, ident: str, content: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{content}</section>'


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


def _share(part: int, whole: int) -> str:
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
        tip = f"{step.label}: {step.messages:,} ({_share(step.messages, top)} of recipients)"
        marks.append(_text(110, y + 21, step.label, "label", "end"))
        marks.append(_rect(120, y, width, 30, colour, tip))
        marks.append(
            _text(128 + width, y + 21, f"{step.messages:,}  {_share(step.messages, top)}", "value")
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
        tip = f"{name}: {n:,} ({_share(n, total)})"
        marks.append(_rect(x + 4, bottom - height, slot - 8, height, COLOURS["delivered"], tip))
        marks.append(_text(x + slot / 2, bottom + 16, name, "tick", "middle"))
        if n:
            marks.append(
                _text(x + slot / 2, bottom - height - 4, _share(n, total), "tick", "middle")
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


def _status_table(statuses: tuple[tuple[str, int], ...]) -> str:
    total = sum(n for s, n in statuses if s != "duplicate")
    rows = "".join(
        f"<tr><td>{escape(s)}</td><td class=num>{n:,}</td>"
        f"<td class=num>{'-' if s == 'duplicate' else _share(n, total)}</td></tr>"
        for s, n in statuses
    )
    return (
        "<table><thead><tr><th>status</th><th class=num>messages</th>"
        f"<th class=num>share</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _failure_table(reasons: tuple[Reason, ...]) -> str:
    if not reasons:
        return '<p class="muted">No failures.</p>'
    rows = "".join(
        f"<tr><td>{escape(r.status)}</td><td>{escape(r.code or '-')}</td>"
        f"<td>{escape(r.account)}</td><td class=num>{r.messages:,}</td>"
        f"<td>{escape(r.detail or '')}</td></tr>"
        for r in reasons
    )
    return (
        "<table><thead><tr><th>status</th><th>code</th><th>account</th>"
        "<th class=num>messages</th><th>sample detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


_NO_RUNS = '<p class="muted">This campaign has not run yet.</p>'

_DOCUMENT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{header}
<main>
{body}
</main>
<div id="tip" hidden></div>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937;
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1080px; background: #f8fafc; }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 0 0 12px; font-size: 16px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 16px;
          margin: 16px 0; }
.muted, svg .muted { color: #64748b; fill: #64748b; font-size: 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
.figure { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 6px 10px; }
.figure span { display: block; color: #64748b; font-size: 12px; }
.figure b { font-size: 16px; }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font-size: 13px; fill: #1f2937; }
svg .tick { font-size: 11px; fill: #475569; }
svg .loss { font-size: 12px; fill: #b91c1c; }
svg .empty { font-size: 15px; fill: #94a3b8; }
svg .grid { stroke: #e2e8f0; stroke-width: 1; }
svg .mark:hover { opacity: .75; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e2e8f0;
         vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
#tip { position: fixed; pointer-events: none; background: #111827; color: #fff;
       padding: 4px 8px; border-radius: 4px; font-size: 12px; max-width: 420px; }
"""

# Tooltips from each mark's data-tip, and a record on <body> of how many charts drew
# (data-charts, data-rendered) or of a script error (data-js-error), which the browser
# test reads back.
_SCRIPT = """
(function () {
  "use strict";
  window.addEventListener("error", function (event) {
    document.body.setAttribute("data-js-error", String(event.message));
  });
  var tip = document.getElementById("tip");
  document.addEventListener("mouseover", function (event) {
    var text = event.target.getAttribute && event.target.getAttribute("data-tip");
    tip.hidden = !text;
    if (text) { tip.textContent = text; }
  });
  document.addEventListener("mousemove", function (event) {
    tip.style.left = (event.clientX + 12) + "px";
    tip.style.top = (event.clientY + 12) + "px";
  });
  var charts = document.querySelectorAll("svg.chart");
  var drawn = 0;
  charts.forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var marks = svg.querySelectorAll(".mark, .empty").length;
    svg.setAttribute("data-size", Math.round(box.width) + "x" + Math.round(box.height));
    if (box.width > 0 && box.height > 0 && marks > 0) { drawn += 1; }
  });
  document.body.setAttribute("data-charts", String(charts.length));
  document.body.setAttribute("data-rendered", String(drawn));
})();
"""
