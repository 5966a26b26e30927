"""The hot statements keep their index on a table of realistic size.

50,000 messages over 20 sending runs, a tenth of them queued, the rest delivered, then
ANALYZE: the statistics a busy database has. Each named query is explained with the
values the engine binds (a custom plan, as asyncpg's first executions get; EXPLAIN does
not run it) and must read ``messages`` through its intended index, never by a sequential
scan: a rewrite that loses the index turns a millisecond into a table scan per batch,
which no functional test notices. The queries are named as in engine/sql, whichever file
holds them; the indexes are those of the migrations (0003 messages_run_claim, and the
primary key).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from engine.queries import QUERIES

MESSAGES = 50_000
RUNS = 20

SEED = f"""
INSERT INTO campaigns (name, spec, spec_hash) VALUES ('plans', '{{}}', 'x');
INSERT INTO campaign_runs (campaign_id, scheduled_for, status)
SELECT c.id, now() - make_interval(hours => g), 'sending'
  FROM campaigns c, generate_series(1, {RUNS}) g;
INSERT INTO messages (run_id, phone, account, body, status, next_attempt_at, sent_at,
                      delivered_at, provider_message_id, segments)
SELECT r.ids[1 + i % {RUNS}], '+2782' || lpad(i::text, 7, '0'), 'sim', 'hello',
       CASE WHEN (i / {RUNS}) % 10 = 0 THEN 'queued' ELSE 'delivered' END::message_status,
       now() - make_interval(secs => i),
       CASE WHEN (i / {RUNS}) % 10 <> 0 THEN now() - make_interval(secs => i) END,
       CASE WHEN (i / {RUNS}) % 10 <> 0 THEN now() END,
       CASE WHEN (i / {RUNS}) % 10 <> 0 THEN 'p' || i END, 1
  FROM generate_series(1, {MESSAGES}) i,
       (SELECT array_agg(id ORDER BY id) AS ids FROM campaign_runs) r;
ANALYZE;
"""


@pytest.fixture
async def busy(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database holding a realistic message table."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(SEED)
    try:
        yield conn
    finally:
        await conn.close()


async def plan(conn: asyncpg.Connection, name: str, *args: Any) -> dict[str, Any]:
    """The plan PostgreSQL makes for the named query run with ``args`` (not run)."""
    text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {QUERIES[name]}", *args)
    explained: dict[str, Any] = orjson.loads(text)[0]
    return explained


def scans(node: dict[str, Any]) -> Iterator[tuple[str, str | None, str | None]]:
    """Every node of a plan: (node type, relation, index)."""
    yield node["Node Type"], node.get("Relation Name"), node.get("Index Name")
    for child in node.get("Plans", []):
        yield from scans(child)


def message_scans(explained: dict[str, Any]) -> set[tuple[str, str | None]]:
    """How the plan reads the messages table: (node type, index) of each scan of it."""
    return {
        (kind, index)
        for kind, relation, index in scans(explained["Plan"])
        if relation == "messages" and "Scan" in kind
    }


async def test_claim_reads_the_runs_queue_through_its_index(busy: asyncpg.Connection) -> None:
    """claim_messages finds a run's due messages by messages_run_claim, not by a scan."""
    run_id = await busy.fetchval("SELECT min(id) FROM campaign_runs")
    explained = await plan(
        busy,
        "claim_messages",
        run_id,
        100,
        "worker-1",
        datetime.now(UTC) + timedelta(minutes=1),
        False,
    )
    used = message_scans(explained)
    assert ("Index Scan", "messages_run_claim") in used, used
    assert not any(kind == "Seq Scan" for kind, _ in used), used


async def test_receipt_apply_updates_messages_by_their_key(busy: asyncpg.Connection) -> None:
    """apply_receipts reaches each message of a batch by messages_pkey, not by a scan."""
    ids = await busy.fetchval(
        "SELECT array_agg(id) FROM (SELECT id FROM messages WHERE status = 'delivered'"
        " ORDER BY id LIMIT 100) m"
    )
    now = datetime.now(UTC)
    n = len(ids)
    explained = await plan(
        busy,
        "apply_receipts",
        ids,
        ["delivered"] * n,
        ["read"] * n,
        [now] * n,
        [now] * n,
        [now] * n,
        [None] * n,
        [None] * n,
        [None] * n,
        [None] * n,
    )
    used = message_scans(explained)
    assert ("Index Scan", "messages_pkey") in used, used
    assert not any(kind == "Seq Scan" for kind, _ in used), used
