"""Retention: old runs' messages and receipts go, their outcomes stay (issue 20).

Runs are built with known messages (tests/integration/test_reports.py's realistic run),
then aged; every figure of campaign_outcomes is compared before and after the prune.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from engine import prune
from engine.queries import QUERIES
from tests.integration.test_reports import add_campaign, add_run, insert_messages, plain, realistic

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=120)
RECENT = NOW - timedelta(days=10)
#: the messages of the two old runs that ended: the realistic run's and 30
OLD_MESSAGES = len(realistic(1)) + 30


async def outcomes(conn: asyncpg.Connection) -> dict[int, dict[str, object]]:
    rows = await conn.fetch("SELECT * FROM campaign_outcomes ORDER BY run_id")
    return {row["run_id"]: dict(row) for row in rows}


async def receipt(conn: asyncpg.Connection, at: datetime, *, settled: bool = True) -> int:
    receipt_id: int = await conn.fetchval(
        "INSERT INTO receipts (account, provider_message_id, status, raw, received_at,"
        " applied_at, outcome) VALUES ('zc-main', 'p', 'delivered', '{}', $1, $2, $3)"
        " RETURNING id",
        at,
        at if settled else None,
        "applied" if settled else None,
    )
    return receipt_id


async def world(conn: asyncpg.Connection) -> dict[str, int]:
    """Old runs that ended (completed, cancelled), an old paused and an old over-budget run
    (they can still send), and a recent completed run."""
    spring = await add_campaign(conn, "spring")
    runs = {
        "old": await add_run(conn, spring, OLD, recipients=740, counts={"duplicate": 7}),
        "old_cancelled": await add_run(conn, spring, OLD + timedelta(days=1), status="cancelled"),
        "old_paused": await add_run(conn, spring, OLD + timedelta(days=2), status="paused"),
        "old_over_budget": await add_run(
            conn, spring, OLD + timedelta(days=3), status="over_budget"
        ),
        "recent": await add_run(conn, spring, RECENT),
    }
    await insert_messages(
        conn,
        realistic(runs["old"])
        + plain(runs["old_cancelled"], 30, 5000, 2)
        + plain(runs["old_paused"], 10, 6000, 3)
        + plain(runs["old_over_budget"], 10, 6500, 3)
        + plain(runs["recent"], 20, 7000, 4),
    )
    for name, run_id in runs.items():
        ended = RECENT if name == "recent" else OLD + timedelta(days=5)
        await conn.execute("UPDATE campaign_runs SET finished_at = $1 WHERE id = $2", ended, run_id)
    return runs


async def left(conn: asyncpg.Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT run_id, count(*) FROM messages GROUP BY 1")
    return {row["run_id"]: row["count"] for row in rows}


async def test_prune_keeps_every_outcome_and_drops_only_what_ended_before_the_cutoff(
    conn: asyncpg.Connection,
) -> None:
    runs = await world(conn)
    old_receipt = await receipt(conn, OLD)
    pending = await receipt(conn, OLD, settled=False)
    new_receipt = await receipt(conn, RECENT)
    await conn.execute(
        "INSERT INTO rejected_webhooks (account, reason, body_bytes, excerpt, received_at)"
        " VALUES ('zc-main', 'x', 1, 'x', $1), ('zc-main', 'y', 1, 'y', $2)",
        OLD,
        RECENT,
    )
    before = await outcomes(conn)
    cutoff = prune.cutoff(NOW, timedelta(days=90))
    dry = await prune.count(conn, cutoff)
    assert (dry.runs, dry.messages, dry.receipts, dry.rejected) == (2, OLD_MESSAGES, 1, 1)

    done = await prune.prune(conn, cutoff, batch=64)  # many batches per run

    assert (done.runs, done.messages, done.receipts, done.rejected) == (2, OLD_MESSAGES, 1, 1)
    assert await outcomes(conn) == before  # every figure of every run, pruned or not
    assert await left(conn) == {
        runs["old_paused"]: 10,
        runs["old_over_budget"]: 10,
        runs["recent"]: 20,
    }
    kept = {r["id"] for r in await conn.fetch("SELECT id FROM receipts")}
    assert kept == {pending, new_receipt} and old_receipt not in kept
    assert await conn.fetchval("SELECT count(*) FROM rejected_webhooks") == 1
    pruned = await conn.fetch("SELECT id FROM campaign_runs WHERE pruned_at IS NOT NULL")
    assert {r["id"] for r in pruned} == {runs["old"], runs["old_cancelled"]}
    again = await prune.prune(conn, cutoff)
    assert (again.runs, again.messages, again.receipts) == (0, 0, 0)
    assert await outcomes(conn) == before


async def test_a_prune_stopped_half_way_is_finished_by_the_next(conn: asyncpg.Connection) -> None:
    runs = await world(conn)
    before = await outcomes(conn)
    cutoff = prune.cutoff(NOW, timedelta(days=90))
    # as if the last prune died after summarising the run and deleting some of its messages
    await conn.execute(QUERIES["summarise_run"], runs["old"])
    await conn.execute(QUERIES["prune_messages"], runs["old"], 100)
    assert await outcomes(conn) == before  # already read from the summary
    done = await prune.prune(conn, cutoff)
    assert (done.runs, done.messages) == (2, OLD_MESSAGES - 100)
    assert runs["old"] not in await left(conn)
    assert await outcomes(conn) == before


def test_a_cutoff_under_a_day_is_refused() -> None:
    with pytest.raises(prune.PruneError, match="at least 1d"):
        prune.cutoff(NOW, timedelta(hours=23))
