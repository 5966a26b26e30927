"""The dispatcher on a real PostgreSQL, sending through the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg

from engine import db
from engine.config import EngineConfig
from engine.dispatcher import PIPELINE, Dispatcher
from engine.providers import adapter_for
from engine.providers.base import Adapter, Outbound, SendResult
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from tests.integration.helpers import add_contacts, campaign, fire_and_expand, numbers, statuses
from tests.net import HoldingProxy


async def simulator(**family: Any) -> RunningSimulator:
    settings = SimulatorSettings(seed=7, default=FamilySettings(webhook_url=None, **family))
    return await serve(settings, "127.0.0.1", 0)


def config_for(sim: RunningSimulator, **account: Any) -> EngineConfig:
    base = {"type": "simulator", "base_url": sim.url, "rate": 1000, "concurrency": 8}
    extra = account.pop("extra_accounts", {})
    return EngineConfig.model_validate(
        {
            "providers": {"sim": {**base, **account}, **extra},
        }
    )


def adapters(config: EngineConfig, session: aiohttp.ClientSession) -> dict[str, Adapter[Any]]:
    return {name: adapter_for(name, account, session) for name, account in config.providers.items()}


async def setup_run(
    conn: asyncpg.Connection, pool: asyncpg.Pool, config: EngineConfig, count: int, **spec: Any
) -> tuple[int, list[str]]:
    phones = numbers(count)
    await add_contacts(conn, [{"phone": p} for p in phones])
    run_id = await fire_and_expand(conn, pool, campaign(provider="sim", **spec), config)
    return run_id, phones


class Recording:
    """Wraps an adapter to record when each request started and how many overlapped."""

    def __init__(self, inner: Adapter[Any]) -> None:
        self.inner = inner
        self.name = inner.name
        self.account = inner.account
        self.max_batch = inner.max_batch
        self.idempotent_sends = inner.idempotent_sends
        self.starts: list[tuple[float, int]] = []
        self.in_flight = 0
        self.peak = 0

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        self.starts.append((time.monotonic(), len(batch)))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.inner.send(batch)
        finally:
            self.in_flight -= 1


async def test_every_queued_message_is_sent_once(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, phones = await setup_run(conn, pool, config, 40)
        await Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        rows = await conn.fetch(
            "SELECT phone, status::text, provider_message_id, attempts,"
            " sent_at FROM messages WHERE run_id = $1",
            run_id,
        )
        assert {r["status"] for r in rows} == {"sent"}
        assert all(r["provider_message_id"] and r["sent_at"] for r in rows)
        assert {r["attempts"] for r in rows} == {1}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)


async def test_bulk_account_sends_batches(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim, bulk=True, batch_size=25)
        run_id, phones = await setup_run(conn, pool, config, 60)
        await Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        assert set((await statuses(conn, run_id)).values()) == {"sent"}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)
        # batches of at most 25; the claim loops may split the 60 between them, each
        # leaving at most one partial batch
        assert sim.stats.requests <= math.ceil(60 / 25) + PIPELINE - 1


async def test_rate_is_held(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim, rate=20)
        await setup_run(conn, pool, config, 60)
        recording = Recording(adapters(config, session)["sim"])
        started = time.monotonic()
        await Dispatcher(pool, config, "d1", {"sim": recording}).drain()  # type: ignore[dict-item]
        elapsed = time.monotonic() - started
        times = [t for t, _ in recording.starts]
        busiest = max(sum(1 for t in times if s <= t < s + 1) for s in times)
        assert len(times) == 60
        assert busiest <= 40  # the rate plus its burst (aiolimiter's bucket holds one second)
        assert elapsed >= 1.9  # 60 messages at 20/s with a 20-message burst


async def test_concurrency_cap_is_held(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(latency=0.05) as sim:
        config = config_for(sim, concurrency=3)
        await setup_run(conn, pool, config, 30)
        recording = Recording(adapters(config, session)["sim"])
        await Dispatcher(pool, config, "d1", {"sim": recording}).drain()  # type: ignore[dict-item]
        assert recording.peak == 3
        assert len(recording.starts) == 30


async def test_429_requeues_with_retry_after_and_pauses_only_that_account(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    limited = await serve(
        SimulatorSettings(default=FamilySettings(rate_limited=1.0, retry_after=30)), "127.0.0.1", 0
    )
    async with limited, await simulator() as healthy:
        config = config_for(
            limited,
            extra_accounts={"other": {"type": "simulator", "base_url": healthy.url, "rate": 1000}},
        )
        run_id, _ = await setup_run(conn, pool, config, 5)
        await add_contacts(conn, [{"phone": p} for p in numbers(5, start=2000001)], ["b"])
        other_run = await fire_and_expand(
            conn, pool, campaign("other", provider="other", audience={"groups": ["b"]}), config
        )
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        before = datetime.now(UTC)
        await dispatcher.drain()
        rows = await conn.fetch(
            "SELECT status::text, attempts, error_code, next_attempt_at"
            " FROM messages WHERE run_id = $1",
            run_id,
        )
        assert {(r["status"], r["attempts"], r["error_code"]) for r in rows} == {
            ("queued", 1, "429")
        }
        assert all(r["next_attempt_at"] >= before + timedelta(seconds=29) for r in rows)
        loop_time = asyncio.get_running_loop().time()
        assert dispatcher.accounts["sim"].paused_until > loop_time + 25
        assert dispatcher.accounts["other"].paused_until == 0
        assert set((await statuses(conn, other_run)).values()) == {"sent"}
        assert limited.stats.accepted == 0


async def test_retry_then_success_sends_each_number_once(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(rate_limited=0.3, retry_after=0.01) as sim:
        config = config_for(sim).model_copy(update={"max_attempts": 20})
        run_id, phones = await setup_run(conn, pool, config, 30)
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        for _ in range(50):
            await dispatcher.drain()
            if set((await statuses(conn, run_id)).values()) == {"sent"}:
                break
            await asyncio.sleep(0.05)
        assert set((await statuses(conn, run_id)).values()) == {"sent"}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)
        assert await conn.fetchval("SELECT max(attempts) FROM messages") > 1


async def test_retries_exhausted_fail_the_message(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(rate_limited=1.0, retry_after=0.01) as sim:
        config = config_for(sim).model_copy(update={"max_attempts": 2})
        run_id, _ = await setup_run(conn, pool, config, 3)
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        for _ in range(20):
            await dispatcher.drain()
            await asyncio.sleep(0.03)
        rows = await conn.fetch(
            "SELECT status::text, attempts, error_code, error_detail"
            " FROM messages WHERE run_id = $1",
            run_id,
        )
        assert {(r["status"], r["attempts"], r["error_code"]) for r in rows} == {
            ("failed", 2, "retries_exhausted")
        }
        assert rows[0]["error_detail"].startswith("2 attempts, last 429")


async def test_timeout_becomes_unknown_and_is_never_resent(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(timeouts=1.0, hang=5) as sim:
        config = config_for(sim, timeout=0.3)
        run_id, _ = await setup_run(conn, pool, config, 3)
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        await dispatcher.drain()
        await dispatcher.drain()
        rows = await conn.fetch(
            "SELECT status::text, attempts, error_code FROM messages WHERE run_id = $1", run_id
        )
        assert {(r["status"], r["attempts"], r["error_code"]) for r in rows} == {
            ("unknown", 1, "timeout")
        }
        assert sim.stats.messages == 3


async def test_expired_and_late_suppressed_messages_are_not_sent(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, (ok, stale, gone) = await setup_run(conn, pool, config, 3)
        await conn.execute(
            "UPDATE messages SET expires_at = now() - interval '1 minute' WHERE phone = $1", stale
        )
        await conn.execute("INSERT INTO suppressions (phone, source) VALUES ($1, 'sms')", gone)
        await Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        assert await statuses(conn, run_id) == {ok: "sent", stale: "expired", gone: "suppressed"}
        assert sim.stats.per_number == {ok: 1}


async def test_lease_of_a_dead_dispatcher_becomes_unknown(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, _ = await setup_run(conn, pool, config, 4)
        dead = Dispatcher(
            pool, config, "dead", adapters(config, session), lease=timedelta(milliseconds=1)
        )
        # claimed, then the process "died"
        claimed = await dead._claim(run_id, 4, quiet_hours=False)
        assert len(claimed) == 4
        await asyncio.sleep(0.01)
        alive = Dispatcher(pool, config, "alive", adapters(config, session))
        assert await alive.recover_leases() == 4
        await alive.drain()
        rows = await conn.fetch(
            "SELECT status::text, error_code, error_detail FROM messages WHERE run_id = $1", run_id
        )
        assert {(r["status"], r["error_code"]) for r in rows} == {("unknown", "lease_expired")}
        assert "dead" in rows[0]["error_detail"]
        assert sim.stats.messages == 0


async def test_two_dispatchers_never_send_a_message_twice(
    conn: asyncpg.Connection, database_url: str, session: aiohttp.ClientSession
) -> None:
    from engine import db

    async with (
        await simulator(latency=0.002) as sim,
        db.pool(database_url, max_size=4) as pool_a,
        db.pool(database_url, max_size=4) as pool_b,
    ):
        config = config_for(sim)
        run_id, phones = await setup_run(conn, pool_a, config, 300)
        await asyncio.gather(
            Dispatcher(pool_a, config, "a", adapters(config, session)).drain(),
            Dispatcher(pool_b, config, "b", adapters(config, session)).drain(),
        )
        assert set((await statuses(conn, run_id)).values()) == {"sent"}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)
        workers = await conn.fetch("SELECT DISTINCT worker FROM messages WHERE run_id = $1", run_id)
        assert {w["worker"] for w in workers} <= {"a", "b"}


async def test_failure_brake_pauses_a_run_that_is_mostly_rejected(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(reject_suffixes=("",)) as sim:  # every number rejected
        config = config_for(sim, rate=10)
        run_id, _ = await setup_run(conn, pool, config, 60)
        dispatcher = Dispatcher(
            pool, config, "d1", adapters(config, session), failure_window=20, failure_ratio=0.5
        )
        await dispatcher.drain()
        run = await conn.fetchrow(
            "SELECT status::text, reason FROM campaign_runs WHERE id = $1", run_id
        )
        assert run["status"] == "paused"
        assert run["reason"].startswith("paused by the failure brake: 20 of the last 20")
        left = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE run_id = $1 AND status = 'queued'", run_id
        )
        assert left >= 30  # the rest of the audience was spared
        assert sim.stats.messages == 60 - left


async def test_stop_finishes_or_settles_in_flight_sends(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator(latency=2.0) as sim:
        config = config_for(sim, concurrency=2, rate=1000)
        run_id, _ = await setup_run(conn, pool, config, 6)
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        running = asyncio.create_task(dispatcher.run())
        for _ in range(100):  # until both requests are in flight at the provider
            if sim.stats.requests == 2:
                break
            await asyncio.sleep(0.05)
        await dispatcher.stop(timedelta(seconds=0.2))
        await running
        counts = await conn.fetch(
            "SELECT status::text, error_code, attempts, count(*) FROM"
            " messages WHERE run_id = $1 GROUP BY 1, 2, 3",
            run_id,
        )
        got = {(r["status"], r["error_code"], r["attempts"]): r["count"] for r in counts}
        assert got == {("unknown", "shutdown", 1): 2, ("queued", None, 0): 4}
        assert sim.stats.requests == 2  # the two in flight reached the provider


async def test_a_stop_while_the_claim_is_on_its_way_puts_the_claimed_back(
    conn: asyncpg.Connection, database_url: str, session: aiohttp.ClientSession
) -> None:
    """The claim has committed on the server but its answer has not reached the
    dispatcher when a stop cancels the lane: what it claimed never started, so it goes
    back to the queue (not left 'sending' for lease recovery to call 'unknown')."""
    target = urlsplit(database_url)
    # an embedded server's URL names its Unix socket directory (?host=); the proxy goes there
    host = parse_qs(target.query).get("host", [target.hostname or "127.0.0.1"])[0]
    # The proxy holds the replies once the worker's name goes by: it is first sent as a
    # parameter of the claim's execution (the statement is prepared before, without it),
    # so the claim runs and commits on the server while its answer waits.
    worker = "held-claimer"
    async with (
        await simulator() as sim,
        HoldingProxy(host, target.port or 5432, worker.encode()) as proxy,
    ):
        proxied = urlunsplit(
            target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.listen}", query="")
        )
        async with db.pool(proxied, min_size=1, max_size=4) as pool:
            config = config_for(sim, concurrency=2, rate=1000)
            run_id, _ = await setup_run(conn, pool, config, 6)
            dispatcher = Dispatcher(pool, config, worker, adapters(config, session))
            running = asyncio.create_task(dispatcher.run())
            committed = "SELECT count(*) FROM messages WHERE status = 'sending'"
            for _ in range(400):  # until the claims have committed, their answers held
                if await conn.fetchval(committed) == 6:
                    break
                await asyncio.sleep(0.025)
            assert await conn.fetchval(committed) == 6, "the claims committed, answers held"
            lanes = list(dispatcher._lanes.values())
            assert lanes and proxy.held
            stopping = asyncio.create_task(dispatcher.stop(timedelta(0)))
            for _ in range(400):  # until stop has cancelled the lanes
                if all(lane.cancelling() or lane.done() for lane in lanes):
                    break
                await asyncio.sleep(0.01)
            proxy.release()
            await stopping
            await running
    got = await conn.fetch(
        "SELECT status::text, attempts, count(*) FROM messages WHERE run_id = $1 GROUP BY 1, 2",
        run_id,
    )
    assert [tuple(r) for r in got] == [("queued", 0, 6)]
    assert sim.stats.requests == 0


async def test_quiet_hours_at_send_time_hold_the_message(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        now = datetime.now(UTC)
        # a window covering "now" in UTC, for a contact in UTC
        start = (now - timedelta(hours=1)).strftime("%H:%M")
        end = (now + timedelta(hours=1)).strftime("%H:%M")
        [phone] = numbers(1)
        await add_contacts(conn, [{"phone": phone, "timezone": "UTC"}])
        run_id = await fire_and_expand(conn, pool, campaign(provider="sim"), config)
        await conn.execute(
            "UPDATE campaign_runs SET spec = jsonb_set(spec, '{schedule,"
            "quiet_hours}', to_jsonb($1::text)) WHERE id = $2",
            f"{start}-{end}",
            run_id,
        )
        await Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        row = await conn.fetchrow(
            "SELECT status::text, attempts, error_code, next_attempt_at"
            " FROM messages WHERE run_id = $1",
            run_id,
        )
        assert (row["status"], row["attempts"], row["error_code"]) == ("queued", 0, "quiet_hours")
        assert row["next_attempt_at"] > now + timedelta(minutes=50)
        assert sim.stats.messages == 0


async def test_campaign_rate_caps_its_run(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim:
        config = config_for(sim, rate=1000)
        await setup_run(conn, pool, config, 30, limits={"rate": "10/s"})
        recording = Recording(adapters(config, session)["sim"])
        started = time.monotonic()
        await Dispatcher(pool, config, "d1", {"sim": recording}).drain()  # type: ignore[dict-item]
        assert len(recording.starts) == 30
        assert time.monotonic() - started >= 1.9  # 30 at 10/s after a 10-message burst


async def test_results_are_recorded_while_the_rest_of_the_batch_is_sending(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """A claimed batch's first results land before its last request is answered, so a
    receipt arriving after them finds its message already 'sent'."""
    async with await simulator(latency=0.1) as sim:
        config = config_for(sim, concurrency=1)  # 20 requests one after another: 2 s
        run_id, _ = await setup_run(conn, pool, config, 20)
        drain = asyncio.create_task(
            Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        )
        seen = []
        while not drain.done():
            seen.append(await statuses(conn, run_id))
            await asyncio.sleep(0.05)
        await drain
        both = [s for s in seen if "sent" in s.values() and "sending" in s.values()]
        assert both, "every result waited for the whole batch"
        assert set((await statuses(conn, run_id)).values()) == {"sent"}


async def test_a_pass_that_ends_after_stop_starts_no_lane(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """stop() can land while run() is reading the sending runs; the lane that pass would
    start must not: nothing would stop it."""
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, _ = await setup_run(conn, pool, config, 3)
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        await dispatcher.stop(timedelta(seconds=0.1))
        await dispatcher.serve_once()  # the pass that was under way
        await asyncio.sleep(0.2)
        assert dispatcher._lanes == {}
        assert set((await statuses(conn, run_id)).values()) == {"queued"}
        assert sim.stats.requests == 0


async def test_a_lane_holds_at_most_a_second_of_sending_claimed(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """A bulk account with batch 100 at 100/s: the lane's claim loops must not each claim a
    batch (3 x 100 'sending' would be stranded 'unknown' by a kill -9), only one second's."""
    async with await simulator(latency=0.05) as sim:
        config = config_for(sim, bulk=True, batch_size=100, rate=100)
        run_id, phones = await setup_run(conn, pool, config, 300)
        drain = asyncio.create_task(
            Dispatcher(pool, config, "d1", adapters(config, session)).drain()
        )
        peak = 0
        while not drain.done():
            peak = max(
                peak,
                await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE run_id = $1 AND status = 'sending'", run_id
                ),
            )
            await asyncio.sleep(0.02)
        await drain
        assert 0 < peak <= 100
        assert set((await statuses(conn, run_id)).values()) == {"sent"}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)
