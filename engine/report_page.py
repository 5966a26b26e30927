"""The chart page of one campaign run: a single HTML document that needs no network.

Pure: :func:`render_page` turns a :class:`engine.report_charts.PageData` (gathered by
:func:`engine.reports.report_html`) into HTML with inline CSS, inline SVG drawn here, and
a few lines of inline JavaScript for tooltips. The charts are:

- the delivery funnel: recipients → queued → sent → delivered → read, with what was lost
  at each step and why; the read step only on channels with read receipts (not SMS);
- sends and receipts over time (messages accepted, delivered, read and failed per bucket,
  of seconds for a run of a minute, up to days for a long one);
- the time-to-delivery distribution (a histogram on a roughly logarithmic scale);
- failures by reason (status, provider code and account);
- for a run with tracked links or A/B variants, their tables (``PageData.tables``).

Every text that comes from the database (campaign names, provider error details) is
escaped: the daemon serves this page.
"""

from __future__ import annotations

from html import escape

from engine.report_charts import PageData, Reason
from engine.report_svg import failures_svg, funnel_svg, histogram_svg, share, timeline_svg


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
        *(
            _section(title, f"table-{n}", _text_table(headers, rows))
            for n, (title, headers, rows) in enumerate(data.tables)
        ),
    ]
    return "\n".join(sections)


def _text_table(headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, ident: str, content: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{content}</section>'


def _status_table(statuses: tuple[tuple[str, int], ...]) -> str:
    total = sum(n for s, n in statuses if s != "duplicate")
    rows = "".join(
        f"<tr><td>{escape(s)}</td><td class=num>{n:,}</td>"
        f"<td class=num>{'-' if s == 'duplicate' else share(n, total)}</td></tr>"
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
