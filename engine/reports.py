"""Delivery outcomes for analysts: ``engine report``, ``engine export`` and the chart page.

The SQL interface is the views of migration 0005 (``campaign_outcomes``,
``message_outcomes``, ``failure_reasons``); this module reads them for the command line
and the daemon:

- :func:`runs_report`: every campaign's latest run, a campaign's runs, or one run in
  detail (statuses, top failure reasons, latency figures), as a :class:`Report`;
- :func:`render`: a report as an aligned text table, CSV or one JSON document;
- :func:`export_csv`: one CSV row per message, streamed by ``COPY ... TO STDOUT``;

Text from outside the engine is made safe where it is shown (:mod:`engine.untrusted`):
text tables write control characters as visible escapes, and CSV cells that a
spreadsheet would run as a formula get a leading ``'`` unless ``raw`` is asked for.
- :func:`report_html`: the self-contained chart page of one run
  (:mod:`engine.report_page` draws it).

Numbers that belong together are read in one read-only repeatable-read transaction, so a
run still receiving receipts gives a consistent report.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
import orjson

from engine import report_page, untrusted
from engine.errors import EngineError
from engine.queries import QUERIES
from engine.report_page import PageData, Reason, Series, Step, Timeline
from engine.status import SKIP_STATUSES, MessageStatus

log = logging.getLogger(__name__)

#: runs of one campaign listed by ``engine report NAME``
RUNS_LIMIT = 50
#: failure reasons in a run's report, and bars on its page
FAILURES_LIMIT = 10
PAGE_FAILURES = 12
#: lower edges (seconds) of the time-to-delivery bins after the first ("< 1s")
LATENCY_EDGES = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LATENCY_LABELS = (
    "<1s",
    "1–2s",
    "2–5s",
    "5–10s",
    "10–30s",
    "30s–1m",
    "1–2m",
    "2–5m",
    "5–10m",
    "10–30m",
    "30m–1h",
    "1–2h",
    "2–6h",
    "6–24h",
    "≥1d",
)
#: timeline bucket sizes in seconds; the smallest that gives at most TIMELINE_BUCKETS, so a
#: one-minute run is drawn per second and a three-day one per half hour
TIMELINE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600,
                  43200, 86400, 172800, 604800)  # fmt: skip
TIMELINE_BUCKETS = 180
#: channels whose providers send no read receipts: their funnel ends at "delivered"
NO_READ_RECEIPTS = frozenset({"sms"})

Format = Literal["table", "csv", "json"]

#: the columns of the runs table in text form (CSV and JSON carry every column)
RUN_COLUMNS = (
    "campaign",
    "run_id",
    "kind",
    "run_status",
    "scheduled_for",
    "recipients",
    "accepted",
    "delivered",
    "read",
    "undelivered",
    "failed",
    "delivery_rate",
    "estimated_cost",
    "cost",
    "cost_per_delivered",
    "median_delivery_seconds",
    "p95_delivery_seconds",
)
#: the figures of one run in text form
SUMMARY_COLUMNS = (
    "campaign",
    "run_id",
    "kind",
    "run_status",
    "scheduled_for",
    "started_at",
    "finished_at",
    "recipients",
    "accepted",
    "delivery_rate",
    "estimated_cost",
    "cost",
    "cost_per_delivered",
    "median_delivery_seconds",
    "p95_delivery_seconds",
)
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

_STATUS_ORDER = [s.value for s in MessageStatus]
_SKIPS = frozenset(s.value for s in SKIP_STATUSES) - {MessageStatus.DUPLICATE.value}


class ReportError(EngineError):
    """A report names a campaign or run that does not exist, or cannot be written."""


@dataclass(frozen=True, slots=True)
class Table:
    """Rows under column names; ``shown`` picks the columns of the text form."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    shown: tuple[str, ...] | None = None
    record: bool = False  # one row of figures: vertical in text, an object in JSON

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as column -> value mappings."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class Report:
    """A titled list of tables."""

    title: str
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        """The table called ``name``."""
        return next(t for t in self.tables if t.name == name)


# --- engine report ------------------------------------------------------------------------


async def runs_report(
    conn: asyncpg.Connection, campaign: str | None = None, run_id: int | None = None
) -> Report:
    """No name: each campaign's latest run; a name: its runs; one run: that run in detail."""
    async with _snapshot(conn):
        if run_id is not None:
            await _run(conn, run_id, campaign)
            outcome = await conn.fetchrow(QUERIES["report_run_outcome"], run_id)
            return await _run_report(conn, outcome)
        if campaign is not None:
            return await _campaign_report(conn, campaign)
        rows = await conn.fetch(QUERIES["report_latest_runs"])
        return Report("latest run of each campaign", (_runs_table(rows),))


def _snapshot(conn: asyncpg.Connection) -> AbstractAsyncContextManager[Any]:
    """One consistent read-only snapshot for a report's queries, unless the caller's
    transaction already gives one."""
    if conn.is_in_transaction():
        return nullcontext()
    return conn.transaction(isolation="repeatable_read", readonly=True)  # type: ignore[no-any-return]


async def _campaign_report(conn: asyncpg.Connection, name: str) -> Report:
    found = await _campaign(conn, name)
    rows = await conn.fetch(QUERIES["report_campaign_runs"], found["id"], RUNS_LIMIT)
    if len(rows) == 1:
        return await _run_report(conn, rows[0])
    more = f" (latest {RUNS_LIMIT})" if found["runs"] > RUNS_LIMIT else ""
    return Report(f"runs of {name}{more}", (_runs_table(rows),))


async def _campaign(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["report_campaign"], name)
    if row is None:
        raise ReportError(f"no campaign named {name!r}")
    return row


async def _run(conn: asyncpg.Connection, run_id: int, campaign: str | None) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["report_run"], run_id)
    if row is None:
        raise ReportError(f"no run {run_id}")
    if campaign is not None and row["campaign"] != campaign:
        raise ReportError(f"run {run_id} belongs to campaign {row['campaign']!r}, not {campaign!r}")
    return row


def _runs_table(rows: Sequence[asyncpg.Record]) -> Table:
    columns = tuple(rows[0].keys()) if rows else RUN_COLUMNS
    return Table("runs", "runs", columns, tuple(tuple(r.values()) for r in rows), RUN_COLUMNS)


async def _run_report(conn: asyncpg.Connection, outcome: asyncpg.Record) -> Report:
    run_id = outcome["run_id"]
    failures = await conn.fetch(QUERIES["report_failures"], run_id, FAILURES_LIMIT)
    latency = await conn.fetchrow(QUERIES["report_latency"], run_id)
    summary = Table(
        "run",
        "run",
        tuple(outcome.keys()),
        (tuple(outcome.values()),),
        SUMMARY_COLUMNS,
        record=True,
    )
    return Report(
        f"{outcome['campaign']}: run {run_id}",
        (
            summary,
            _statuses_table(outcome),
            _failures_table(failures, outcome["recipients"]),
            _latency_table(latency),
        ),
    )


def status_counts(outcome: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The non-zero status counts of a campaign_outcomes row, in the status enum's order."""
    return [(s, int(outcome[s])) for s in _STATUS_ORDER if outcome[s]]


def _statuses_table(outcome: Mapping[str, Any]) -> Table:
    recipients = outcome["recipients"] or 0
    rows = tuple(
        (s, n, None if s == MessageStatus.DUPLICATE else _ratio(n, recipients))
        for s, n in status_counts(outcome)
    )
    return Table("statuses", "messages by status", ("status", "messages", "share"), rows)


def _failures_table(rows: Sequence[asyncpg.Record], recipients: int | None) -> Table:
    columns = ("status", "account", "error_code", "messages", "share", "skipped", "sample_detail")
    return Table(
        "failures",
        f"top {FAILURES_LIMIT} reasons not delivered",
        columns,
        tuple(
            (
                r["status"],
                r["account"],
                r["error_code"],
                r["messages"],
                _ratio(r["messages"], recipients or 0),
                r["skipped"],
                r["sample_detail"],
            )
            for r in rows
        ),
    )


def _latency_table(row: asyncpg.Record) -> Table:
    p = row["p"] or [None] * 4
    columns = ("delivered", "min", "median", "p90", "p95", "p99", "max", "mean")
    values = (row["delivered"], row["min"], *p, row["max"], row["mean"])
    return Table("latency", "seconds from send to delivery", columns, (tuple(values),), record=True)


def _ratio(part: int, whole: int) -> Decimal | None:
    return round(Decimal(part) / whole, 4) if whole else None


# --- rendering ----------------------------------------------------------------------------


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
    cells = [[_cell(shown[k], row[i]) for k, i in enumerate(index)] for row in table.rows]
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


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in ("delivery_rate", "share"):
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


# --- engine export ------------------------------------------------------------------------


async def export_csv(
    conn: asyncpg.Connection,
    campaign: str,
    run_id: int | None,
    out: Path,
    *,
    masked: bool = False,
    raw: bool = False,
) -> int:
    """Write one CSV row per message of a campaign (every run, or ``run_id``) to ``out``.

    Streamed by ``COPY ... TO STDOUT`` into ``out``.part, which replaces ``out`` once
    complete; returns the number of rows. ``masked`` writes masked numbers only; cells
    that would run as a spreadsheet formula are neutralised unless ``raw``.
    """
    found = await _campaign(conn, campaign)
    if run_id is None:
        run_ids = [
            r["id"] for r in await conn.fetch(QUERIES["report_campaign_run_ids"], found["id"])
        ]
    else:
        run_ids = [(await _run(conn, run_id, campaign))["id"]]
    partial = out.with_name(out.name + ".part")
    # COPY (...) takes the query without its closing semicolon
    query = QUERIES["export_messages_masked" if masked else "export_messages"].rstrip(";")
    try:
        status = await conn.copy_from_query(
            query,
            run_ids,
            untrusted.FORMULA_START,
            "" if raw else untrusted.PREFIX,
            output=partial,
            format="csv",
            header=True,
        )
        await asyncio.to_thread(partial.replace, out)
    except OSError as exc:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        if isinstance(exc, ConnectionError):  # the database went away, not the file
            raise
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    rows = int(status.split()[-1])
    log.info("exported %d messages to %s", rows, out, extra={"campaign": campaign, "run": run_id})
    return rows


# --- the chart page -----------------------------------------------------------------------


async def report_html(conn: asyncpg.Connection, campaign: str, run_id: int | None = None) -> str:
    """The self-contained chart page of a campaign's run (by default its latest run)."""
    async with _snapshot(conn):
        found = await _campaign(conn, campaign)
        if run_id is None:
            run_id = await conn.fetchval(QUERIES["report_latest_run_id"], found["id"])
        else:
            await _run(conn, run_id, campaign)
        now = datetime.now(UTC)
        if run_id is None:
            return report_page.render_page(PageData(campaign, None, 0, now))
        return report_page.render_page(await _page_data(conn, found, run_id, now))


async def _page_data(
    conn: asyncpg.Connection, campaign: asyncpg.Record, run_id: int, now: datetime
) -> PageData:
    outcome = await conn.fetchrow(QUERIES["report_run_outcome"], run_id)
    accepted: dict[str, int] = {}
    channels = set()
    for row in await conn.fetch(QUERIES["report_accepted"], run_id):
        accepted[row["status"]] = accepted.get(row["status"], 0) + row["messages"]
        channels.add(row["channel"])
    failures = await conn.fetch(QUERIES["report_failures"], run_id, PAGE_FAILURES)
    bins = await conn.fetch(
        QUERIES["report_latency_histogram"], run_id, [float(e) for e in LATENCY_EDGES]
    )
    return PageData(
        campaign=campaign["name"],
        run_id=run_id,
        runs=campaign["runs"],
        generated_at=now,
        summary=summary_figures(outcome),
        statuses=tuple(status_counts(outcome)),
        funnel=funnel(outcome, accepted, read_receipts=has_read_receipts(channels, accepted)),
        timeline=await _timeline(conn, run_id),
        histogram=histogram({r["bin"]: r["messages"] for r in bins}),
        failures=tuple(
            Reason(
                r["status"],
                r["error_code"],
                r["account"],
                r["messages"],
                r["skipped"],
                r["sample_detail"],
            )
            for r in failures
        ),
    )


def has_read_receipts(channels: set[str], accepted: Mapping[str, int]) -> bool:
    """Whether the funnel has a read step: a channel with read receipts, or a message read."""
    # a provider that reports an SMS as read after all is shown, not hidden
    return bool(channels - NO_READ_RECEIPTS) or accepted.get(MessageStatus.READ.value, 0) > 0


def summary_figures(outcome: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The headline figures of a run, formatted for the page."""
    delivered = outcome["delivered"] + outcome["read"]
    figures = [
        ("run status", outcome["run_status"]),
        ("scheduled", outcome["scheduled_for"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("recipients", f"{outcome['recipients'] or 0:,}"),
        ("sent", f"{outcome['accepted']:,}"),
        ("delivered", f"{delivered:,}"),
        ("delivery rate", _cell("delivery_rate", outcome["delivery_rate"])),
        ("estimated cost", _cell("cost", outcome["estimated_cost"])),
        ("cost of accepted messages", _cell("cost", outcome["cost"])),
        ("cost per delivered", _cell("cost", outcome["cost_per_delivered"])),
        ("median to delivery", _seconds(outcome["median_delivery_seconds"])),
        ("95% delivered within", _seconds(outcome["p95_delivery_seconds"])),
    ]
    return tuple(figures)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


#: how the funnel names what was lost between two steps
_LOSS_NAMES = {
    "queued": "waiting to send",
    "sending": "waiting to send",
    "sent": "awaiting a receipt",
    "delivered": "no read receipt",
}


#: (status, accepted by the provider) -> messages
_Split = dict[tuple[str, bool], int]
_Pick = Callable[[str, bool], bool]
_REACHED = frozenset({MessageStatus.DELIVERED.value, MessageStatus.READ.value})


def funnel(
    outcome: Mapping[str, Any], accepted: Mapping[str, int], *, read_receipts: bool = True
) -> tuple[Step, ...]:
    """recipients → queued → sent → delivered → read, from a campaign_outcomes row and the
    run's accepted messages per status.

    queued: recipients not skipped at expansion; sent: accepted by the provider (as the
    views count it); delivered: delivered or read. Each step lists what the previous one
    lost, by status. Without ``read_receipts`` (SMS) the funnel ends at delivered: no
    message of such a channel is ever read, so none is lost before it.
    """
    split: _Split = {}
    for status, n in status_counts(outcome):
        if status != MessageStatus.DUPLICATE:
            split[(status, True)] = accepted.get(status, 0)
            split[(status, False)] = n - accepted.get(status, 0)

    def step(label: str, pick: _Pick, lost: _Pick | None = None) -> Step:
        return Step(label, _total(split, pick), _losses(split, lost) if lost else ())

    steps = (
        step("recipients", lambda s, a: True),
        step("queued", lambda s, a: s not in _SKIPS, lambda s, a: s in _SKIPS),
        step("sent", lambda s, a: a, lambda s, a: not a and s not in _SKIPS),
        step("delivered", lambda s, a: a and s in _REACHED, lambda s, a: a and s not in _REACHED),
    )
    if not read_receipts:
        return steps
    return (
        *steps,
        step("read", lambda s, a: a and s == "read", lambda s, a: a and s == "delivered"),
    )


def _total(split: _Split, pick: _Pick) -> int:
    return sum(n for key, n in split.items() if pick(*key))


def _losses(split: _Split, pick: _Pick) -> tuple[tuple[str, int], ...]:
    """What was lost, by the name of its status, most first."""
    merged: dict[str, int] = {}
    for (status, accepted), n in split.items():
        if n and pick(status, accepted):
            name = _LOSS_NAMES.get(status, status)
            merged[name] = merged.get(name, 0) + n
    return tuple(sorted(merged.items(), key=lambda item: -item[1]))


async def _timeline(conn: asyncpg.Connection, run_id: int) -> Timeline | None:
    """The run's timeline: per minute, or per few seconds when the run is that short."""
    rows = await conn.fetch(QUERIES["report_timeline"], run_id)
    step = timeline_step(rows)
    if step < 60:  # minutes are too coarse: count again in buckets of step seconds
        start = min(r["at"] for r in rows)
        rows = await conn.fetch(
            QUERIES["report_timeline_fine"], run_id, timedelta(seconds=step), start
        )
    return timeline(rows, step)


def timeline_step(rows: Sequence[Mapping[str, Any]]) -> int:
    """Bucket seconds for per-minute (kind, at, messages) rows: at most TIMELINE_BUCKETS."""
    if not rows:
        return 60
    first, last = min(r["at"] for r in rows), max(r["at"] for r in rows)
    span = (last - first).total_seconds() + 60  # the last minute counts whole
    return next((s for s in TIMELINE_STEPS if span / s <= TIMELINE_BUCKETS), TIMELINE_STEPS[-1])


def timeline(rows: Sequence[Mapping[str, Any]], step: int | None = None) -> Timeline | None:
    """(kind, at, messages) rows, each ``at`` a bucket start, merged into ``step``-second
    buckets; by default the rows are per minute, merged as :func:`timeline_step` says."""
    if not rows:
        return None
    size = max(timeline_step(rows), 60) if step is None else step
    start = min(r["at"] for r in rows)
    span = int((max(r["at"] for r in rows) - start).total_seconds())
    buckets = span // size + 1
    series: dict[str, list[int]] = {}
    for row in rows:
        counts = series.setdefault(row["kind"], [0] * buckets)
        counts[int((row["at"] - start).total_seconds()) // size] += row["messages"]
    order = ("sent", "delivered", "read", "failed")
    return Timeline(
        start.astimezone(UTC),
        timedelta(seconds=size),
        tuple(Series(k, tuple(series[k])) for k in order if k in series),
    )


def histogram(counts: Mapping[int, int]) -> tuple[tuple[str, int], ...]:
    """Histogram bins (label, messages) from width_bucket numbers (0 .. len(edges))."""
    return tuple((label, int(counts.get(i, 0))) for i, label in enumerate(LATENCY_LABELS))
