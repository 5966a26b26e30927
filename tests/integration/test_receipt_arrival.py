"""Receipts applied as they arrive, written once (engine.receipt_arrival, issue 20).

Each scenario is played twice on messages built alike: once stored pending and applied by
the reconciler (the path the rules' tests in test_receipts.py pin down), once applied at
arrival; the messages and the receipts' outcomes must come out the same. Then what only
arrival does: one write per receipt, receipts that must wait for their send, retried
events, and the fallback when a deadlock breaks the arrival transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from engine.providers.base import Receipt
from engine.receipt_arrival import Arrivals, store_and_apply
from engine.receipts import ReceiptRows, store_receipts
from engine.reconciler import Reconciler
from engine.status import MessageStatus as S
from tests.integration.test_receipts import make_run

#: (message index or None, receipt): index i refers to the scenario's i-th message by our id
Step = tuple[int | None, Receipt]


def r(pid: str | None, status: S | None, **extra: Any) -> Receipt:
    return Receipt(pid, None, status, status.value if status else "TELEPORTED", **extra)


SCENARIOS: dict[str, tuple[list[dict[str, Any]], list[list[Step]]]] = {
    "forward only": (
        [{"provider_message_id": "1"}],
        [
            [(None, r("1", S.DELIVERED))],
            [(None, r("1", S.SENT)), (None, r("1", S.FAILED, error_code="late"))],
            [(None, r("1", S.READ))],
        ],
    ),
    "retried events": (
        [{"provider_message_id": "1"}],
        [
            [(None, r("1", S.UNDELIVERED, event_id="e1", error_code="005"))],
            [(None, r("1", S.UNDELIVERED, event_id="e1"))],
            [(None, r("1", S.UNDELIVERED, error_code="other"))],
        ],
    ),
    "out of order in one batch": (
        [{"provider_message_id": "1"}, {"provider_message_id": "2"}],
        [
            [
                (None, r("1", S.READ)),
                (None, r("1", S.SENT)),
                (None, r("1", S.DELIVERED)),
                (None, r("2", S.DELIVERED)),
                (None, r("2", S.FAILED)),
            ]
        ],
    ),
    "parts": (
        [
            {"provider_message_id": "1", "segments": 3},
            {"provider_message_id": "2", "segments": 2},
        ],
        [
            [(None, r("1", S.DELIVERED, part=1)), (None, r("1", S.DELIVERED, part=2))],
            [(None, r("2", S.DELIVERED, part=1)), (None, r("1", S.DELIVERED, part=2))],
            [(None, r("1", S.DELIVERED, part=3)), (None, r("2", S.UNDELIVERED, part=2))],
        ],
    ),
    "unknown status": ([{"provider_message_id": "1"}], [[(None, r("1", None))]]),
    "final receipts settle unknown and expired": (
        [
            {"status": "unknown", "provider_message_id": None, "sent_at": None},
            {"status": "expired", "provider_message_id": None},
            {"status": "cancelled", "provider_message_id": None},
        ],
        [
            [(0, r("late-1", S.DELIVERED)), (1, r("late-2", S.SENT)), (2, r("x", S.DELIVERED))],
            [(1, r(None, S.UNDELIVERED))],
        ],
    ),
    "another account's message": (
        [{"provider_message_id": "1", "account": "other"}],
        [[(0, r("1", S.DELIVERED))]],
    ),
    "opt-out code": (
        [{"provider_message_id": "1"}, {"provider_message_id": "2"}],
        [[(None, r("1", S.FAILED, opt_out=True)), (None, r("2", S.DELIVERED))]],
    ),
}


def tagged(receipt: Receipt, tag: str, ids: Sequence[int], index: int | None) -> Receipt:
    """The receipt for this play's messages: its ids carry the play's tag."""
    return replace(
        receipt,
        provider_message_id=None
        if receipt.provider_message_id is None
        else tag + receipt.provider_message_id,
        event_id=None if receipt.event_id is None else tag + receipt.event_id,
        message_id=None if index is None else ids[index],
    )


async def play(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    tag: str,
    at_arrival: bool,
    messages: list[dict[str, Any]],
    batches: list[list[Step]],
) -> tuple[list[tuple[Any, ...]], list[Any], int]:
    """Play one scenario; the messages, the receipts' outcomes and suppressions after it."""
    specs = [
        {
            **m,
            "provider_message_id": None
            if m.get("provider_message_id") is None
            else tag + m["provider_message_id"],
        }
        for m in messages
    ]
    _, ids = await make_run(conn, *specs)
    for batch in batches:
        rows = ReceiptRows()
        for index, receipt in batch:
            rows.add("sim", tagged(receipt, tag, ids, index))
        if at_arrival:
            async with conn.transaction():
                await store_and_apply(conn, rows, "webhook")
        else:
            await store_receipts(conn, rows, "webhook")
        await Reconciler(pool).apply_pending()
    states = await conn.fetch(
        "SELECT status::text, replace(provider_message_id, $2, '') AS pid, error_code,"
        " sent_at IS NOT NULL AS s, delivered_at IS NOT NULL AS d, read_at IS NOT NULL AS rd,"
        " failed_at IS NOT NULL AS f FROM messages WHERE id = ANY($1::bigint[]) ORDER BY id",
        ids,
        tag,
    )
    outcomes = await conn.fetch(
        "SELECT outcome, applied_at IS NOT NULL AS applied FROM receipts"
        " WHERE provider_message_id LIKE $2 || '%' OR message_id = ANY($1::bigint[])"
        " ORDER BY id",
        ids,
        tag,
    )
    suppressed = await conn.fetchval(
        "SELECT count(*) FROM suppressions s JOIN messages m ON m.phone = s.phone"
        " WHERE m.id = ANY($1::bigint[])",
        ids,
    )
    return [tuple(s) for s in states], [tuple(o) for o in outcomes], suppressed


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_arrival_decides_as_the_reconciler_does(
    conn: asyncpg.Connection, pool: asyncpg.Pool, name: str
) -> None:
    messages, batches = SCENARIOS[name]
    stored = await play(conn, pool, "a-", False, messages, batches)
    arrived = await play(conn, pool, "b-", True, messages, batches)
    assert arrived == stored
    assert stored[1], "the scenario stored receipts"


async def test_a_receipt_is_written_once_and_applied_before_the_call_returns(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (mid,) = await make_run(conn, {})
    rows = ReceiptRows()
    rows.add("sim", r("p1", S.DELIVERED))
    arrivals = Arrivals()
    async with pool.acquire() as own:
        assert await store_and_apply(own, rows, "webhook", arrivals) == 1
    row = await conn.fetchrow(
        "SELECT outcome, applied_at = received_at AS same_transaction, xmin::text = ("
        " SELECT xmin::text FROM messages WHERE id = $1) AS with_the_message FROM receipts",
        mid,
    )
    assert tuple(row) == ("applied", True, True)  # one transaction wrote both, once
    assert await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", mid) == (
        "delivered"
    )
    assert arrivals.outcomes == {"applied": 1}
    assert await Reconciler(pool).apply_pending() == 0  # nothing left for it


async def test_a_receipt_before_its_send_result_waits_for_the_reconciler(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (mid,) = await make_run(conn, {"status": "sending", "provider_message_id": None})
    rows = ReceiptRows()
    rows.add("sim", Receipt("late-p", mid, S.DELIVERED, "DELIVERED"))
    async with pool.acquire() as own:
        await store_and_apply(own, rows, "webhook")
    pending = await conn.fetchrow("SELECT outcome, applied_at FROM receipts")
    assert (pending["outcome"], pending["applied_at"]) == ("waiting_for_send", None)
    await conn.execute(
        "UPDATE messages SET status = 'sent', provider_message_id = 'late-p', sent_at = now()"
        " WHERE id = $1",
        mid,
    )
    assert await Reconciler(pool).apply_pending() == 1
    assert await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", mid) == (
        "delivered"
    )


async def arrive_while_held(
    pool: asyncpg.Pool, rows: ReceiptRows, holding: str, message_id: int
) -> int:
    """Receipts arriving while another transaction, having run ``holding`` on the message,
    holds it (committed afterwards). With lock_timeout set, an arrival that waited for the
    row would fail instead of hanging the test."""
    async with pool.acquire() as holder, pool.acquire() as own:
        await own.execute("SET lock_timeout = '2s'")
        async with holder.transaction():
            await holder.execute(holding, message_id)
            return await store_and_apply(own, rows, "webhook")


async def test_a_receipt_never_waits_for_the_dispatcher_recording_its_send(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The dispatcher's record_results holds a 'sending' message while a receipt for it
    arrives: the arrival does not lock (so does not wait for) a message whose send is not
    recorded; it stores the receipt for the reconciler and returns, holding nothing the
    dispatcher needs. (With lock_timeout set, a wait would fail the call instead of
    hanging the test.)"""
    _, (mid,) = await make_run(conn, {"status": "sending", "provider_message_id": None})
    rows = ReceiptRows()
    rows.add("sim", Receipt("p-held", mid, S.DELIVERED, "DELIVERED"))
    recording = (
        "UPDATE messages SET status = 'sent', provider_message_id = 'p-held', sent_at = now()"
        " WHERE id = $1"
    )
    assert await arrive_while_held(pool, rows, recording, mid) == 1
    assert await conn.fetchval("SELECT outcome FROM receipts") == "waiting_for_send"
    assert await Reconciler(pool).apply_pending() == 1
    assert await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", mid) == (
        "delivered"
    )


async def test_a_receipt_that_changes_nothing_does_not_lock_its_message(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A 'sent' receipt for a message already 'sent' (half of a bulk account's receipts)
    is settled without locking the message: another transaction holding the row (here a
    reconciler or the poller) does not make the webhook wait. (With lock_timeout set, a
    wait would fail the call.)"""
    _, (mid,) = await make_run(conn, {})
    rows = ReceiptRows()
    rows.add("sim", r("p1", S.SENT, event_id="sent-1"))
    holding = "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE"
    assert await arrive_while_held(pool, rows, holding, mid) == 1
    assert await conn.fetchval("SELECT outcome FROM receipts") == "duplicate"
    assert await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", mid) == "sent"


async def test_a_message_that_moves_after_it_was_read_is_left_to_the_reconciler(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """The arrival reads the message 'sent' and decides 'delivered' while another
    transaction is moving it to 'undelivered': the arrival's UPDATE waits for that row,
    finds it moved, and changes nothing; its receipt is stored pending and the reconciler
    decides it on the message as it now is (forward only: a 'delivered' receipt after
    'undelivered' is stale). Nothing is lost and nothing moves back."""
    _, (mid,) = await make_run(conn, {})
    rows = ReceiptRows()
    rows.add("sim", r("p1", S.DELIVERED, event_id="late-dlr"))
    arrivals = Arrivals()
    async with pool.acquire() as other, pool.acquire() as own:
        moving = other.transaction()
        await moving.start()
        await other.execute(
            "UPDATE messages SET status = 'undelivered', error_code = 'X1', failed_at = now()"
            " WHERE id = $1",
            mid,
        )
        arriving = asyncio.create_task(store_and_apply(own, rows, "webhook", arrivals))
        await _waiting_for_a_lock(conn, own.get_server_pid())  # it read 'sent', decided
        assert not arriving.done()
        await moving.commit()
        assert await arriving == 1
    assert arrivals.outcomes == {}  # not settled at arrival
    pending = await conn.fetchrow("SELECT outcome, applied_at FROM receipts")
    assert (pending["outcome"], pending["applied_at"]) == (None, None)
    assert await Reconciler(pool).apply_pending() == 1
    state = await conn.fetchrow("SELECT status::text, error_code FROM messages WHERE id = $1", mid)
    assert tuple(state) == ("undelivered", "X1")
    assert await conn.fetchval("SELECT outcome FROM receipts") == "stale"


async def _waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> None:
    """Until backend ``pid`` waits for a lock (at most 10 s)."""
    for _ in range(1000):
        waiting = await conn.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_a_deadlock_stores_the_batch_for_the_reconciler(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Another transaction holds the second message and then wants the first, which the
    arrival holds: PostgreSQL breaks the cycle by failing the arrival (its deadlock check
    runs first), and the batch is stored pending, nothing lost."""
    _, (first, second) = await make_run(conn, {}, {})
    rows = ReceiptRows()
    rows.add("sim", r("p1", S.DELIVERED))
    rows.add("sim", r("p2", S.DELIVERED))
    arrivals = Arrivals()
    async with pool.acquire() as other, pool.acquire() as own:
        await other.execute("SET deadlock_timeout = '10s'")  # the arrival's check fires first
        holding = other.transaction()
        await holding.start()
        await other.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", second)
        arriving = asyncio.create_task(store_and_apply(own, rows, "webhook", arrivals))
        await asyncio.sleep(0.3)  # the arrival holds the first and waits for the second
        wanting = asyncio.create_task(
            other.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", first)
        )
        assert await arriving == 2
        await wanting
        await holding.rollback()
    assert arrivals.fallbacks == 1
    assert [r["outcome"] for r in await conn.fetch("SELECT outcome FROM receipts")] == [
        None,
        None,
    ]
    assert await Reconciler(pool).apply_pending() == 2
    statuses = await conn.fetch("SELECT status::text FROM messages ORDER BY id")
    assert [s["status"] for s in statuses] == ["delivered", "delivered"]
