"""How a report is written out: an aligned text table, CSV or one JSON document.

Pure: :func:`render` turns a :class:`engine.reports.Report` into text. Text from outside
the engine is made safe where it is shown (:mod:`engine.untrusted`): text tables write
control characters as visible escapes, and CSV cells that a spreadsheet would run as a
formula get a leading ``'`` unless ``raw`` is asked for.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import orjson

from engine import untrusted

if TYPE_CHECKING:  # the report's shape only; engine.reports reads the database
    from engine.reports import Report, Table

Format = Literal["table", "csv", "json"]

#: shorter headings for the text tables
LABELS = {
    "run_id": "run",
    "run_status": "status",
    "scheduled_for": "scheduled",
    "delivery_rate": "rate",
    "cost_per_delivered": "cost/delivered",
    "median_delivery_seconds": "median s",
    "p95_delivery_seconds": "p95 s",
    "estimated_cost": "estimated cost",
    "cost": "cost of accepted messages",
    "started_at": "started",
    "finished_at": "finished",
    "error_code": "code",
    "sample_detail": "sample detail",
}


def render(report: Report, fmt: Format, *, raw: bool = False) -> str:
    """The report as an aligned text table, CSV (a blank line between tables) or JSON.

    CSV cells that would run as a spreadsheet formula are neutralised unless ``raw``."""
    if fmt == "table":
        return "\n\n".join([report.title, *(_text_table(t) for t in report.tables)])
    if fmt == "csv":
        return "\n".join(_csv_table(t, raw) for t in report.tables).rstrip("\n")
    if fmt == "json":
        return _json(report)
    raise ValueError(f"unknown report format {fmt!r}")


def _text_table(table: Table) -> str:
    shown = table.shown or table.columns
    index = [table.columns.index(c) for c in shown]
    headers = [LABELS.get(c, c) for c in shown]
    cells = [[cell(shown[k], row[i]) for k, i in enumerate(index)] for row in table.rows]
    if table.record and len(cells) == 1:
        return _aligned([[h, v] for h, v in zip(headers, cells[0], strict=True)], table.title)
    if not cells:
        return f"{table.title}\n(none)"
    return _aligned([headers, *cells], table.title)


def _aligned(lines: list[list[str]], title: str) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join([title, *out])


def cell(column: str, value: Any) -> str:
    """One value as a text table shows it (rates as percentages, times in the local zone)."""
    if value is None:
        return "-"
    if column in ("delivery_rate", "share", "click_through_rate", "rate", "test_share"):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M %Z")  # the zone named
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | Decimal) and not column.endswith("_id"):
        return f"{value:,}"
    return untrusted.printable(str(value))


def _csv_table(table: Table, raw: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([_csv_value(v, raw) for v in row] for row in table.rows)
    return buffer.getvalue()


def _csv_value(value: Any, raw: bool) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and not raw:
        return untrusted.csv_cell(value)  # numbers are never text here: they stay numbers
    return "" if value is None else value


def _json(report: Report) -> str:
    tables = {t.name: (t.dicts()[0] if t.record and t.rows else t.dicts()) for t in report.tables}
    document = {"title": report.title, "tables": tables}
    return orjson.dumps(document, default=_json_default, option=orjson.OPT_INDENT_2).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
