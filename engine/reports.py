"""Delivery outcomes for analysts, read from the database: ``engine report``, ``engine
export`` and the chart page.

The SQL interface is the views of migration 0005 (``campaign_outcomes``,
``message_outcomes``, ``failure_reasons``); this module reads them for the command line
and the daemon:

- :func:`runs_report`: every campaign's latest run, a campaign's runs, or one run in
  detail (statuses, top failure reasons, latency figures), as a :class:`Report`
  (:func:`engine.report_output.render` writes it as a table, CSV or JSON);
- :func:`export_csv`: one CSV row per message, streamed by ``COPY ... TO STDOUT``; cells
  a spreadsheet would run as a formula get a leading ``'`` unless ``raw`` is asked for;
- :func:`report_html`: the self-contained chart page of one run (its data shaped by
  :mod:`engine.report_charts`, drawn by :mod:`engine.report_page`).

Numbers that belong together are read in one read-only repeatable-read transaction, so a
run still receiving receipts gives a consistent report."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from engine import link_reports, report_page, untrusted
from engine.errors import EngineError
from engine.queries import QUERIES
from engine.report_charts import (
    LATENCY_EDGES,
    PageData,
    Reason,
    Timeline,
    funnel,
    has_read_receipts,
    histogram,
    status_counts,
    summary_figures,
    timeline,
    timeline_step,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: runs of one campaign listed by ``engine report NAME``
RUNS_LIMIT = 50
#: failure reasons in a run's report, and bars on its page
FAILURES_LIMIT = 10
PAGE_FAILURES = 12


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
    accounts = await conn.fetch(QUERIES["report_accounts"], run_id)
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
            _accounts_table(accounts),
            *await link_reports.run_tables(conn, run_id),  # tracked links, A/B variants
        ),
    )


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


def _accounts_table(rows: Sequence[asyncpg.Record]) -> Table:
    """Sends, outcomes and cost per account (a route's run uses several)."""
    columns = ACCOUNT_COLUMNS
    return Table(
        "accounts", "by account", columns, tuple(tuple(r[c] for c in columns) for r in rows)
    )


#: the per-account table's columns (``report_accounts``)
ACCOUNT_COLUMNS = (
    "account",
    "messages",
    "accepted",
    "delivered",
    "undelivered",
    "failed",
    "unknown",
    "pending",
    "rerouted",
    "cost",
)


def _latency_table(row: asyncpg.Record) -> Table:
    p = row["p"] or [None] * 4
    columns = ("delivered", "min", "median", "p90", "p95", "p99", "max", "mean")
    values = (row["delivered"], row["min"], *p, row["max"], row["mean"])
    return Table("latency", "seconds from send to delivery", columns, (tuple(values),), record=True)


def _ratio(part: int, whole: int) -> Decimal | None:
    return round(Decimal(part) / whole, 4) if whole else None


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
        funnel=await link_reports.with_clicks(
            conn,
            run_id,
            funnel(outcome, accepted, read_receipts=has_read_receipts(channels, accepted)),
        ),
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
        tables=await link_reports.page_tables(conn, run_id),
    )


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
