"""Receipts to final statuses, opt-outs, polling and run completion on a real PostgreSQL.

The reconciler's rules are checked on messages written directly (so each state is
exact); the flows (opt-outs by reply, polling, the end-to-end one, the kill -9) run
through the simulator, the webhook server and the dispatcher over real HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from engine.config import EngineConfig
from engine.dispatcher import Dispatcher
from engine.poller import Poller
from engine.providers.base import Receipt
from engine.queries import QUERIES
from engine.receipt_rules import ReceiptOutcome
from engine.receipts import Keywords, ReceiptRows, store_receipts
from engine.reconciler import Reconciler
from engine.scheduler import complete_runs
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from engine.status import MessageStatus as S
from engine.webhooks import WebhookHandler
from tests.integration.helpers import add_contacts, campaign, fire_and_expand, numbers, statuses
from tests.integration.test_webhooks import SECRET, WebhookServer, adapters_for

REPO = Path(__file__).resolve().parents[2]

# --- messages written directly ------------------------------------------------------------


async def make_run(
    conn: asyncpg.Connection, *messages: dict[str, Any], counts: dict[str, int] | None = None
) -> tuple[int, list[int]]:
    """A sending run with these messages (defaults: account sim, sent, provider id p<n>)."""
    cid = await conn.fetchval(
        "INSERT INTO campaigns (name, spec, spec_hash) VALUES ('c' || gen_random_uuid(),"
        " '{}', 'h') RETURNING id"
    )
    run_id = await conn.fetchval(
        "INSERT INTO campaign_runs (campaign_id, scheduled_for, status, spec, counts)"
        " VALUES ($1, now(), 'sending', '{}', $2) RETURNING id",
        cid,
        counts or {},
    )
    ids = []
    for n, message in enumerate(messages, 1):
        row = {
            "account": "sim",
            "status": "sent",
            "provider_message_id": f"p{n}",
            "sent_at": datetime.now(UTC) - timedelta(seconds=5),
            "segments": 1,
            "phone": f"+2782{run_id:03d}{n:04d}",
            **message,
        }
        ids.append(
            await conn.fetchval(
                "INSERT INTO messages (run_id, phone, account, status, provider_message_id,"
                " sent_at, segments, worker, error_code) VALUES ($1, $2, $3, $4::message_status,"
                " $5, $6, $7, $8, $9) RETURNING id",
                run_id,
                row["phone"],
                row["account"],
                row["status"],
                row["provider_message_id"],
                row["sent_at"],
                row["segments"],
                row.get("worker"),
                row.get("error_code"),
            )
        )
    return run_id, ids


def receipt(
    pid: str | None,
    status: S | None,
    *,
    mid: int | None = None,
    word: str | None = None,
    **extra: Any,
) -> Receipt:
    return Receipt(pid, mid, status, word or (status.value if status else "?"), **extra)


async def add(conn: asyncpg.Connection, *receipts: Receipt, account: str = "sim") -> None:
    rows = ReceiptRows()
    for one in receipts:
        rows.add(account, one)
    await store_receipts(conn, rows, "webhook")


async def message(conn: asyncpg.Connection, mid: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT status::text, provider_message_id, sent_at, delivered_at, read_at, failed_at,"
        " error_code, error_detail FROM messages WHERE id = $1",
        mid,
    )


async def outcomes(conn: asyncpg.Connection) -> list[tuple[ReceiptOutcome | None, bool]]:
    """(outcome, applied) of every receipt, in arrival order; an outcome the enum does not
    know fails here."""
    rows = await conn.fetch(
        "SELECT outcome, applied_at IS NOT NULL AS applied FROM receipts ORDER BY id"
    )
    return [(r["outcome"] and ReceiptOutcome(r["outcome"]), r["applied"]) for r in rows]


# --- opt-out keywords, pure -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", "opt_out"),
        (" stop \n", "opt_out"),
        ("Stop!", "opt_out"),
        ("quit.", "opt_out"),
        ("STOPALL", "opt_out"),
        ("unsubscribe", "opt_out"),
        ("Cancel", "opt_out"),
        ("end", "opt_out"),
        ("START", "opt_in"),
        ("unstop", "opt_in"),
        ("OptIn", "opt_in"),
        ("help", "help"),
        ("INFO", "help"),
        ("please stop", None),
        ("STOP NOW", None),
        ("stopp", None),
        ("", None),
    ],
)
def test_keywords(text: str, action: str | None) -> None:
    assert Keywords().action(text) == action


# --- the reconciler -----------------------------------------------------------------------


async def test_status_only_moves_forward(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    _, (mid,) = await make_run(conn, {})
    reconciler = Reconciler(pool)
    await add(conn, receipt("p1", S.DELIVERED))
    assert await reconciler.apply_pending() == 1
    delivered = await message(conn, mid)
    assert delivered["status"] == "delivered" and delivered["delivered_at"] is not None
    await add(conn, receipt("p1", S.SENT))  # late
    await add(conn, receipt("p1", S.FAILED, error_code="late"))  # contradicts a final status
    assert await reconciler.apply_pending() == 2
    assert (await message(conn, mid))["status"] == "delivered"
    await add(conn, receipt("p1", S.READ))
    await reconciler.apply_pending()
    read = await message(conn, mid)
    assert read["status"] == "read" and read["read_at"] is not None
    assert read["delivered_at"] == delivered["delivered_at"]
    assert await outcomes(conn) == [
        ("applied", True),
        ("stale", True),
        ("stale", True),
        ("applied", True),
    ]
    assert reconciler.outcomes["sim", "applied"] == 2


async def test_duplicates_change_nothing(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    _, (mid,) = await make_run(conn, {})
    await add(
        conn,
        receipt("p1", S.UNDELIVERED, event_id="e1", error_code="005", error_detail="unreachable"),
    )
    await add(conn, receipt("p1", S.UNDELIVERED, event_id="e1"))  # a retried webhook
    assert await conn.fetchval("SELECT count(*) FROM receipts") == 1
    await Reconciler(pool).apply_pending()
    first = await message(conn, mid)
    await add(conn, receipt("p1", S.UNDELIVERED, error_code="other"))  # no event id
    await Reconciler(pool).apply_pending()
    assert await message(conn, mid) == first
    assert (first["status"], first["error_code"], first["error_detail"]) == (
        "undelivered",
        "005",
        "unreachable",
    )
    assert await outcomes(conn) == [("applied", True), ("duplicate", True)]


async def test_out_of_order_in_one_batch_furthest_wins(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (a, b) = await make_run(conn, {}, {})
    await add(
        conn,
        receipt("p1", S.READ),
        receipt("p1", S.SENT),
        receipt("p1", S.DELIVERED),
        receipt("p2", S.DELIVERED),
        receipt("p2", S.FAILED),
    )
    assert await Reconciler(pool).apply_pending() == 5
    first = await message(conn, a)
    assert first["status"] == "read"
    assert first["delivered_at"] is not None and first["read_at"] is not None
    # two final words: the first to arrive stands, the other is kept as stale
    assert (await message(conn, b))["status"] == "delivered"
    assert await outcomes(conn) == [
        ("applied", True),
        ("duplicate", True),
        ("applied", True),
        ("applied", True),
        ("stale", True),
    ]


async def test_receipt_before_the_send_result_waits_for_it(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (by_ours, by_theirs) = await make_run(
        conn,
        {"status": "sending", "provider_message_id": None, "worker": "w1"},
        {"status": "sending", "provider_message_id": None, "worker": "w1"},
    )
    reconciler = Reconciler(pool, retry_after=timedelta(0))
    await add(
        conn,
        receipt("early-1", S.DELIVERED, mid=by_ours),  # our id echoed
        receipt("early-2", S.FAILED, error_code="blocked"),
    )  # the provider's id only
    assert await reconciler.apply_pending() == 0
    rows = await conn.fetch("SELECT outcome, applied_at, tries FROM receipts ORDER BY id")
    assert [(r["outcome"], r["applied_at"], r["tries"]) for r in rows] == [
        ("waiting_for_send", None, 0),
        ("not_found", None, 1),
    ]
    assert await reconciler.apply_pending() == 0  # still not sent: still pending, not dropped
    # the dispatcher's result lands
    await conn.execute(
        QUERIES["record_results"],
        [by_ours, by_theirs],
        ["sent", "sent"],
        ["early-1", "early-2"],
        [None, None],
        [None, None],
        [None, None],
        [0, 0],
        "w1",
        [True, True],
    )
    assert await reconciler.apply_pending() == 2
    assert (await message(conn, by_ours))["status"] == "delivered"
    failed = await message(conn, by_theirs)
    assert (failed["status"], failed["error_code"]) == ("failed", "blocked")
    assert await outcomes(conn) == [("applied", True), ("applied", True)]


async def test_not_found_is_retried_with_backoff_then_given_up(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await add(conn, receipt("nobody", S.DELIVERED))
    reconciler = Reconciler(pool)  # retry after 1 s, doubling
    await reconciler.apply_pending()
    retry_at = await conn.fetchval("SELECT retry_at - received_at FROM receipts")
    assert timedelta(seconds=0.5) < retry_at < timedelta(seconds=5)
    await reconciler.apply_pending()  # not due yet: untouched
    assert await conn.fetchval("SELECT tries FROM receipts") == 1
    await Reconciler(pool, give_up_after=timedelta(0)).apply_pending()
    assert await outcomes(conn) == [("unmatched", True)]


async def test_part_receipts_deliver_a_long_message_when_every_part_is(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (long, failing) = await make_run(conn, {"segments": 3}, {"segments": 2})
    reconciler = Reconciler(pool)
    await add(
        conn,
        receipt("p1", S.DELIVERED, part=1),
        receipt("p1", S.DELIVERED, part=2),
        receipt("p2", S.DELIVERED, part=1),
    )
    await reconciler.apply_pending()
    assert (await message(conn, long))["status"] == "sent"
    await add(conn, receipt("p1", S.DELIVERED, part=2))  # a repeat does not count twice
    await reconciler.apply_pending()
    assert (await message(conn, long))["status"] == "sent"
    await add(
        conn,
        receipt("p1", S.DELIVERED, part=3),
        receipt("p2", S.UNDELIVERED, part=2, error_code="005"),
    )
    await reconciler.apply_pending()
    assert (await message(conn, long))["status"] == "delivered"
    undelivered = await message(conn, failing)
    assert (undelivered["status"], undelivered["error_code"]) == ("undelivered", "005")
    assert [o for o, _ in await outcomes(conn)] == [
        "partial",
        "partial",
        "partial",
        "partial",
        "applied",
        "applied",
    ]


async def test_unknown_provider_status_is_kept_and_changes_nothing(
    conn: asyncpg.Connection, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    _, (mid,) = await make_run(conn, {})
    await add(conn, receipt("p1", None, word="TELEPORTED"))
    assert await Reconciler(pool).apply_pending() == 1
    assert (await message(conn, mid))["status"] == "sent"
    assert await outcomes(conn) == [("unknown_status", True)]
    assert "status we do not know" in caplog.text


async def test_a_final_receipt_settles_unknown_and_expired(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (unknown, expired, cancelled) = await make_run(
        conn,
        {
            "status": "unknown",
            "provider_message_id": None,
            "sent_at": None,
            "error_code": "timeout",
        },
        {"status": "expired", "provider_message_id": None},
        {"status": "cancelled", "provider_message_id": None},
    )
    await add(
        conn,
        receipt("late-1", S.DELIVERED, mid=unknown),
        receipt("late-2", S.SENT, mid=expired),
        receipt("late-3", S.DELIVERED, mid=cancelled),
    )
    await Reconciler(pool).apply_pending()
    settled = await message(conn, unknown)
    assert settled["status"] == "delivered"
    assert settled["provider_message_id"] == "late-1"  # learnt from the receipt
    assert settled["error_code"] is None and settled["sent_at"] is not None
    assert (await message(conn, expired))["status"] == "expired"  # 'sent' is not final
    assert (await message(conn, cancelled))["status"] == "cancelled"
    await add(conn, receipt(None, S.UNDELIVERED, mid=expired))
    await Reconciler(pool).apply_pending()
    assert (await message(conn, expired))["status"] == "undelivered"
    assert [o for o, _ in await outcomes(conn)] == ["applied", "stale", "ignored", "applied"]


async def test_receipts_match_only_their_own_account(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    _, (mid,) = await make_run(conn, {"account": "other"})
    await add(conn, receipt("p1", S.DELIVERED, mid=mid), account="sim")
    await Reconciler(pool).apply_pending()
    assert (await message(conn, mid))["status"] == "sent"
    assert await outcomes(conn) == [("not_found", False)]


async def test_every_outcome_the_database_stores_is_a_receipt_outcome(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # receipts.outcome is a text column: these are the values the engine's SQL and the
    # reconciler store in it, each reached once, and they are exactly the enum's
    _, (_, _, queued, _) = await make_run(
        conn,
        {},
        {"status": "cancelled"},
        {"status": "queued", "provider_message_id": None},
        {"segments": 2},
    )
    await add(
        conn,
        receipt("p1", S.DELIVERED),
        receipt("p1", S.SENT),
        receipt("p2", S.READ),
        receipt("p3", S.DELIVERED, mid=queued),
        receipt("nobody", S.DELIVERED),
        receipt("p1", None, word="TELEPORTED"),
        receipt("p4", S.DELIVERED, part=1),
        receipt("p1", None, word="??", rejected="unreadable"),
    )
    await Reconciler(pool).apply_pending()
    await add(conn, receipt("p1", S.DELIVERED), receipt("p1", S.SENT))
    await Reconciler(pool).apply_pending()
    seen = {o for o, _ in await outcomes(conn)}
    await Reconciler(pool, give_up_after=timedelta(0)).apply_pending()
    seen |= {o for o, _ in await outcomes(conn)}
    stored = {r["outcome"] for r in await conn.fetch("SELECT DISTINCT outcome FROM receipts")}
    assert stored <= {o.value for o in ReceiptOutcome}
    assert seen == set(ReceiptOutcome)


async def test_concurrent_reconcilers_apply_each_receipt_once(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await make_run(conn, *({} for _ in range(300)))
    for n in range(1, 301):  # out of order, and repeated, spread over many batches
        if n % 2:
            await add(
                conn,
                receipt(f"p{n}", S.READ),
                receipt(f"p{n}", S.SENT),
                receipt(f"p{n}", S.DELIVERED),
            )
        else:
            await add(
                conn,
                receipt(f"p{n}", S.SENT),
                receipt(f"p{n}", S.UNDELIVERED),
                receipt(f"p{n}", S.UNDELIVERED),
            )
    from engine import db

    async with db.pool(database_url, min_size=3, max_size=3) as pool:
        reconcilers = [Reconciler(pool, batch=50) for _ in range(3)]
        await asyncio.gather(*(r.apply_pending() for r in reconcilers))
        for _ in range(5):  # any that lost a race are looked at again
            await reconcilers[0].apply_pending()
    final = dict(await conn.fetch("SELECT status::text, count(*) FROM messages GROUP BY 1"))
    assert final == {"read": 150, "undelivered": 150}
    assert await conn.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL") == 0


# --- run completion ---------------------------------------------------------------------


async def test_run_completes_when_every_message_is_final(conn: asyncpg.Connection) -> None:
    done, _ = await make_run(
        conn,
        {"status": "delivered"},
        {"status": "failed"},
        {"status": "suppressed", "provider_message_id": None},
        counts={"queued": 2, "duplicate": 4},
    )
    waiting, _ = await make_run(
        conn,
        {"status": "delivered", "provider_message_id": "w1"},
        {"status": "sent", "provider_message_id": "w2"},
    )
    sending, _ = await make_run(conn, {"status": "queued", "provider_message_id": None})
    window = timedelta(hours=72)
    assert await complete_runs(conn, window) == 1
    run = await conn.fetchrow(
        "SELECT status::text, counts, finished_at FROM campaign_runs WHERE id = $1", done
    )
    assert run["status"] == "completed" and run["finished_at"] is not None
    assert run["counts"] == {"delivered": 1, "failed": 1, "suppressed": 1, "duplicate": 4}
    # sent with the receipt window elapsed: nothing more to learn
    assert await complete_runs(conn, timedelta(seconds=1)) == 1
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", waiting)
        == "completed"
    )
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", sending)
        == "sending"
    )


# --- flows through the simulator ----------------------------------------------------------

FAMILY_ACCOUNTS = {"simulator": "sim", "zingle": "zingle", "zoomconnect": "zc"}


@dataclass
class Stack:
    """A simulator, the engine's config for it, and the webhook server it posts to."""

    sim: RunningSimulator
    config: EngineConfig
    server: WebhookServer
    pool: asyncpg.Pool

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.pool, self.config, "d1", self.server.handler.adapters)

    async def inbound(self, family: str, phone: str, text: str) -> None:
        """A recipient replies; the provider posts it to our webhook."""
        async with self.server.session.post(
            f"{self.sim.url}/sim/inbound/{family}", json={"from": phone, "text": text}
        ) as resp:
            assert resp.status == 202
        await self.sim.receipts_done()


@pytest.fixture
async def start(pool: asyncpg.Pool) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def started(families: dict[str, dict[str, Any]], **writer: Any) -> Stack:
            holder: list[WebhookHandler] = []
            app = web.Application()

            async def route(request: web.Request) -> web.StreamResponse:
                return await holder[0].handle(request)

            app.router.add_post("/webhooks/{account}", route)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}"
            settings = SimulatorSettings(
                seed=11,
                families={
                    family: FamilySettings.model_validate(
                        {
                            "webhook_url": f"{url}/webhooks/{FAMILY_ACCOUNTS[family]}",
                            "webhook_secret": SECRET,
                            **options,
                        }
                    )
                    for family, options in families.items()
                },
            )
            sim = await serve(settings, "127.0.0.1", 0)
            stack.push_async_callback(sim.close)
            config = EngineConfig.model_validate(
                {
                    "providers": {
                        "sim": {
                            "type": "simulator",
                            "base_url": sim.url,
                            "rate": 1000,
                            "webhook_secret": SECRET,
                        },
                        "zingle": {
                            "type": "zingle",
                            "base_url": sim.url,
                            "rate": 1000,
                            "username": "u",
                            "password": "p",
                            "service_id": "svc",
                            "channel_type_id": "ct",
                            "webhook_secret": SECRET,
                        },
                        "zc": {
                            "type": "zoomconnect",
                            "base_url": sim.url,
                            "rate": 1000,
                            "email": "ops@example.com",
                            "token": "t",
                            "webhook_secret": SECRET,
                        },
                    }
                }
            )
            from engine.receipt_writer import ReceiptWriter

            writer_ = ReceiptWriter(pool, **writer)
            await writer_.start()
            stack.push_async_callback(writer_.stop)
            holder.append(WebhookHandler(adapters_for(config, session), writer_))
            server = WebhookServer(url, writer_, holder[0], session)
            return Stack(sim, config, server, pool)

        yield started


async def send_run(
    conn: asyncpg.Connection, stack: Stack, count: int, provider: str = "sim", start: int = 1000001
) -> tuple[int, list[str]]:
    phones = numbers(count, start=start)
    await add_contacts(conn, [{"phone": p} for p in phones])
    run_id = await fire_and_expand(conn, stack.pool, campaign(provider=provider), stack.config)
    return run_id, phones


async def test_stop_and_start_by_sms_reply(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"simulator": {}, "zoomconnect": {}})
    phone = "+27821234567"
    await stack.inbound("simulator", phone, "  stop ")
    row = await conn.fetchrow(
        "SELECT channel, source, reason FROM suppressions WHERE phone = $1", phone
    )
    assert dict(row) == {"channel": "sms", "source": "sms-reply:sim", "reason": "replied   stop "}
    await stack.inbound("zoomconnect", phone, "Thanks, that was useful")  # not a keyword
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 1
    await stack.inbound("zoomconnect", phone, "START")
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    replies = await conn.fetch("SELECT account, action FROM inbound_messages ORDER BY id")
    assert [(r["account"], r["action"]) for r in replies] == [
        ("sim", "opt_out"),
        ("zc", None),
        ("zc", "opt_in"),
    ]


async def test_start_never_lifts_an_operator_suppression(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"simulator": {}})
    phone = "+27821234568"
    await conn.execute(
        "INSERT INTO suppressions (phone, source, reason) VALUES ($1, 'cli', 'legal request')",
        phone,
    )
    await stack.inbound("simulator", phone, "START")
    assert await conn.fetchval("SELECT source FROM suppressions WHERE phone = $1", phone) == "cli"


async def test_keywords_are_configurable_and_help_is_logged(
    conn: asyncpg.Connection,
    start: Callable[..., Awaitable[Stack]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "engine.receipts")
    stack = await start(
        {"simulator": {}}, opt_out_keywords=["ARRET", "Stop"], opt_in_keywords=["reprendre"]
    )
    await stack.inbound("simulator", "+33612345678", "Arrêt")  # not the keyword
    await stack.inbound("simulator", "+33612345679", "arret!")
    await stack.inbound("simulator", "+33612345670", "UNSUBSCRIBE")  # not configured here
    await stack.inbound("simulator", "+33612345671", "help")
    suppressed = await conn.fetch("SELECT phone FROM suppressions")
    assert [r["phone"] for r in suppressed] == ["+33612345679"]
    await stack.inbound("simulator", "+33612345679", "Reprendre")
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    assert "HELP from +33******671" in caplog.text


async def test_zingle_block_and_unblock_webhook(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"zingle": {}})
    await stack.inbound("zingle", "+14065551212", "STOP")
    assert (
        await conn.fetchval("SELECT source FROM suppressions WHERE phone = '+14065551212'")
        == "webhook:zingle"
    )
    await stack.inbound("zingle", "+14065551212", "UNSTOP")
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_stop_mid_campaign_stops_that_recipients_queued_message(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"simulator": {}})
    run_id, phones = await send_run(conn, stack, 10)
    # the run is expanded: every message queued; one recipient replies STOP now
    await stack.inbound("simulator", phones[3], "STOP")
    await stack.dispatcher().drain()
    final = await statuses(conn, run_id)
    assert final.pop(phones[3]) == "suppressed"
    # every other one was sent (receipts may have moved some on already, as they arrive)
    assert set(final.values()) <= {"sent", "delivered", "undelivered"}
    assert phones[3] not in stack.sim.stats.per_number


async def test_zingle_polling_against_the_simulator(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"zingle": {"delivered": 0.5, "undelivered": 0.3}})
    run_id, _ = await send_run(conn, stack, 40, provider="zingle")
    await stack.dispatcher().drain()
    assert set((await statuses(conn, run_id)).values()) == {"sent"}
    poller = Poller(
        stack.pool,
        stack.server.handler.adapters,
        webhookless={"zingle"},
        interval=timedelta(0),
        schedule=[timedelta(0)],
    )
    stored = await poller.poll_once()
    assert 0 < stored < 40  # the failures; "still sent" is no news
    await Reconciler(stack.pool).apply_pending()
    final = await statuses(conn, run_id)
    rows = await conn.fetch(
        "SELECT phone, status::text, error_code, polls FROM messages WHERE run_id = $1", run_id
    )
    assert {r["status"] for r in rows} == {"sent", "undelivered"}  # failed after acceptance
    assert sum(r["status"] == "undelivered" for r in rows) == stored
    assert {r["polls"] for r in rows} == {1}
    assert all(r["error_code"] == "failed" for r in rows if r["status"] == "undelivered")
    # polled again while the window lasts; failed ones no longer
    await poller.poll_once()
    polls = dict(
        await conn.fetch(
            "SELECT status::text, max(polls) FROM messages WHERE run_id = $1 GROUP BY 1", run_id
        )
    )
    assert polls == {"sent": 2, "undelivered": 1}
    assert len(final) == 40


async def test_zoomconnect_fallback_polls_only_overdue_messages(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    # no delivery reports at all: the simulator's DLR posts go nowhere
    stack = await start({"zoomconnect": {"webhook_url": None}})
    run_id, phones = await send_run(conn, stack, 20, provider="zc")
    await stack.dispatcher().drain()
    adapters = stack.server.handler.adapters
    # one message did get its receipt by webhook: never polled
    first = await conn.fetchval(
        "SELECT provider_message_id FROM messages WHERE phone = $1", phones[0]
    )
    assert (
        await stack.server.post(
            "zc", b"", query={"secret": SECRET, "messageId": first, "status": "DELIVERED"}
        )
        == 200
    )
    await Reconciler(stack.pool).apply_pending()
    polls = "SELECT sum(polls) FROM messages WHERE run_id = $1"
    assert await Poller(stack.pool, adapters).poll_once() == 0  # not overdue yet (10 min)
    assert await conn.fetchval(polls, run_id) == 0
    assert await Poller(stack.pool, adapters, poll_after=timedelta(0)).poll_once() == 19
    assert await conn.fetchval(polls, run_id) == 19
    await Reconciler(stack.pool).apply_pending()
    final = await statuses(conn, run_id)
    assert final[phones[0]] == "delivered"
    assert set(final.values()) <= {"delivered", "undelivered", "failed"}
    assert await conn.fetchval("SELECT count(*) FROM receipts WHERE source = 'poll'") == 19


async def test_polling_stops_at_the_receipt_window(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    stack = await start({"zoomconnect": {"webhook_url": None}})
    run_id, _ = await send_run(conn, stack, 5, provider="zc")
    await stack.dispatcher().drain()
    poller = Poller(
        stack.pool, stack.server.handler.adapters, poll_after=timedelta(0), window=timedelta(0)
    )
    assert await poller.poll_once() == 0
    assert await conn.fetchval("SELECT sum(polls) FROM messages WHERE run_id = $1", run_id) == 0
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM messages WHERE run_id = $1 AND next_poll_at = 'infinity'", run_id
        )
        == 5
    )


async def test_end_to_end_every_message_ends_with_the_truth(
    conn: asyncpg.Connection, start: Callable[..., Awaitable[Stack]]
) -> None:
    faults = {
        "delivered": 0.7,
        "undelivered": 0.2,
        "duplicates": 0.3,
        "out_of_order": 0.3,
        "early_receipts": 0.3,
        "receipt_delay": [0, 0.05],
    }
    stack = await start({"simulator": faults})
    run_id, _ = await send_run(conn, stack, 300)
    reconciler = Reconciler(stack.pool, retry_after=timedelta(0))

    async def reconcile_until_sent() -> None:
        while await conn.fetchval(
            "SELECT count(*) FROM messages WHERE run_id = $1 AND status IN ('queued', 'sending')",
            run_id,
        ):
            await reconciler.apply_pending()
            await asyncio.sleep(0.02)

    await asyncio.gather(stack.dispatcher().drain(), reconcile_until_sent())
    await stack.sim.receipts_done()
    await reconciler.apply_pending()
    assert stack.sim.stats.receipts_dropped == 0
    # the oracle: the one final status the simulator posted for each message
    truth = dict(
        await conn.fetch(
            "SELECT DISTINCT provider_message_id, status::text FROM receipts WHERE status <> 'sent'"
        )
    )
    rows = await conn.fetch(
        "SELECT provider_message_id, status::text, delivered_at, failed_at,"
        " sent_at FROM messages WHERE run_id = $1",
        run_id,
    )
    assert len(truth) == len(rows) == 300
    assert {r["provider_message_id"]: r["status"] for r in rows} == truth
    assert all((r["delivered_at"] or r["failed_at"]) >= r["sent_at"] for r in rows)
    assert await conn.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL") == 0
    tally = dict(await conn.fetch("SELECT outcome, count(*) FROM receipts GROUP BY 1"))
    assert tally["applied"] == 300  # each message's final word, once
    assert tally["duplicate"] > 0  # repeats and "sent"s, kept in the log
    assert set(tally) <= {"applied", "duplicate", "stale"}
    assert await complete_runs(conn, timedelta(hours=72)) == 1


# --- durability ---------------------------------------------------------------------------

SERVER = textwrap.dedent("""
    import asyncio, os, sys
    from aiohttp import web
    import aiohttp
    from engine import db
    from engine.config import EngineConfig
    from engine.providers import adapter_for
    from engine.receipt_writer import ReceiptWriter
    from engine.webhooks import WebhookHandler

    async def main():
        config = EngineConfig.model_validate({"providers": {
            "sim": {"type": "simulator", "webhook_secret": "s3cret"}}})
        async with db.pool(os.environ["DATABASE_URL"], min_size=2, max_size=4) as pool, \\
                aiohttp.ClientSession() as session:
            adapters = {n: adapter_for(n, a, session) for n, a in config.providers.items()}
            writer = ReceiptWriter(pool)
            await writer.start()
            app = web.Application()
            app.add_routes(WebhookHandler(adapters, writer).routes())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            print(runner.addresses[0][1], flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
""")


async def post_then_kill_9(database_url: str, events: Iterator[dict[str, str]]) -> list[str]:
    """Post ``events`` (simulator receipts, one per call) from 16 clients to a webhook
    server in a process of its own, kill -9 it once 500 calls were answered 200, and
    return the ``message_id`` of every event acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER,
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    acknowledged: list[str] = []
    enough = asyncio.Event()
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        url = f"http://127.0.0.1:{port}/webhooks/sim"
        headers = {"X-Webhook-Secret": SECRET, "Content-Type": "application/json"}

        async def client(session: aiohttp.ClientSession) -> None:
            for event in events:
                body = orjson.dumps({"events": [event]})
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        if resp.status == 200:
                            acknowledged.append(event["message_id"])
                            if len(acknowledged) >= 500:
                                enough.set()
                except aiohttp.ClientError:
                    return  # the server is gone

        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(client(session)) for _ in range(16)]
            await asyncio.wait_for(enough.wait(), 30)
            proc.send_signal(signal.SIGKILL)  # right after 2xx responses, mid-stream
            await proc.wait()
            await asyncio.gather(*clients)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return acknowledged


@pytest.mark.slow
async def test_kill_9_after_2xx_loses_no_acknowledged_receipt(
    conn: asyncpg.Connection, database_url: str
) -> None:
    unmatched = (
        {"id": f"c{i}", "message_id": f"c{i}", "status": "delivered"} for i in itertools.count()
    )
    acknowledged = await post_then_kill_9(database_url, unmatched)
    stored = {
        r["provider_event_id"] for r in await conn.fetch("SELECT provider_event_id FROM receipts")
    }
    assert len(acknowledged) >= 500
    assert set(acknowledged) <= stored


@pytest.mark.slow
async def test_kill_9_mid_receipt_burst_loses_nothing_and_leaves_nothing_half_applied(
    conn: asyncpg.Connection, database_url: str
) -> None:
    """Receipts for real messages are applied in the transaction that stores them: a
    webhook server killed mid-burst leaves every acknowledged receipt stored and its
    message moved, and every stored receipt applied (or applicable by the reconciler)."""
    count = 3000
    run_id, _ = await make_run(conn, {"provider_message_id": "k0"})
    await conn.execute(
        "INSERT INTO messages (run_id, phone, account, status, provider_message_id, sent_at,"
        " segments) SELECT $1, '+2783' || lpad(i::text, 7, '0'), 'sim', 'sent', 'k' || i,"
        " now() - interval '5 seconds', 1 FROM generate_series(1, $2) AS i",
        run_id,
        count,
    )
    receipts = (
        {"id": f"ev{i}", "message_id": f"k{i}", "status": "delivered"} for i in range(1, count + 1)
    )
    acknowledged = await post_then_kill_9(database_url, receipts)
    delivered = {
        r["provider_message_id"]
        for r in await conn.fetch(
            "SELECT provider_message_id FROM messages WHERE status = 'delivered'"
        )
    }
    stored = await conn.fetch("SELECT provider_message_id, applied_at FROM receipts")
    assert len(acknowledged) >= 500 and len(stored) < count  # killed mid-burst
    assert set(acknowledged) <= delivered  # acknowledged: stored and applied, together
    assert {r["provider_message_id"] for r in stored} == delivered  # nothing half done
    assert all(r["applied_at"] is not None for r in stored)
