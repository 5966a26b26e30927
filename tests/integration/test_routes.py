"""Routes across provider accounts, on a real PostgreSQL, through real simulators over HTTP.

Each account of a route is its own simulator (its own port, its own fault settings), so
an account can refuse connections (its simulator closed), answer 500 (the simulator's
outage switch), time out, or come back, while the other carries on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine import campaign_preview, campaigns, reports
from engine.config import EngineConfig
from engine.dispatcher import Dispatcher
from engine.metrics import Metrics
from engine.providers import adapter_for
from engine.providers.base import Adapter, Outbound, Receipt, SendResult
from engine.receipts import ReceiptRows, store_receipts
from engine.reconciler import Reconciler
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from engine.simulator.accounts import ACCOUNTS
from engine.simulator.model import Stats
from engine.status import MessageStatus as S
from tests.integration.helpers import add_contacts, campaign, fire_and_expand, numbers

HEALTH = {"down_after": 3, "cooloff": "0.2s", "cooloff_max": "1s"}


async def simulator(port: int = 0, **family: Any) -> RunningSimulator:
    settings = SimulatorSettings(seed=11, default=FamilySettings(webhook_url=None, **family))
    return await serve(settings, "127.0.0.1", port)


def route_config(
    urls: dict[str, str], strategy: str = "priority", **accounts: dict[str, Any]
) -> EngineConfig:
    providers = {
        name: {
            "type": "simulator",
            "base_url": url,
            "rate": 1000,
            "concurrency": 4,
            **accounts.get(name, {}),
        }
        for name, url in urls.items()
    }
    return EngineConfig.model_validate(
        {
            "providers": providers,
            "routes": {"main": {"strategy": strategy, "accounts": list(urls)}},
            "health": HEALTH,
        }
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """No keep-alive: a closed simulator refuses the next connection instead of a pooled
    connection dying mid-request (which would be ambiguous, not a refusal)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


def adapters(config: EngineConfig, session: aiohttp.ClientSession) -> dict[str, Adapter[Any]]:
    return {name: adapter_for(name, account, session) for name, account in config.providers.items()}


class AfterRequests:
    """Runs ``action`` once ``after`` requests of the wrapped adapter were answered."""

    def __init__(
        self, inner: Adapter[Any], after: int, action: Callable[[], Awaitable[None]]
    ) -> None:
        self.inner, self.after, self.action = inner, after, action
        self.name, self.account = inner.name, inner.account
        self.max_batch, self.idempotent_sends = inner.max_batch, inner.idempotent_sends
        self.requests = 0

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results = await self.inner.send(batch)
        self.requests += 1
        if self.requests == self.after:
            await self.action()
        return results

    async def check(self) -> str:
        return await self.inner.check()


async def setup(
    conn: asyncpg.Connection, pool: asyncpg.Pool, config: EngineConfig, phones: list[str], name: str
) -> int:
    await add_contacts(conn, [{"phone": p} for p in phones], groups=[name])
    spec = campaign(name, provider="main", audience={"groups": [name]})
    return await fire_and_expand(conn, pool, spec, config)


async def until_final(dispatcher: Dispatcher, conn: asyncpg.Connection, run_id: int) -> None:
    """Drain until no message of the run is queued or sending (retries wait a backoff)."""
    deadline = time.monotonic() + 60
    while True:
        await dispatcher.drain()
        async with dispatcher.pool.acquire() as own:  # two daemons may wait side by side
            left = await own.fetchval(
                "SELECT count(*) FROM messages WHERE run_id = $1"
                " AND status IN ('queued','sending')",
                run_id,
            )
        if not left:
            return
        assert time.monotonic() < deadline, f"{left} messages still queued"
        await asyncio.sleep(0.2)


async def rows(conn: asyncpg.Connection, run_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT phone, status::text, account, tried_accounts, error_code, cost FROM messages"
        " WHERE run_id = $1",
        run_id,
    )


def once_each(phones: list[str], *stats: Stats) -> bool:
    total: Counter[str] = Counter()
    for s in stats:
        total.update(s.per_number)
    return total == Counter(phones)


async def test_priority_fails_over_when_the_first_account_refuses_then_answers_500(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    sim_a, sim_b = await simulator(), await simulator()
    port_a = int(sim_a.url.rsplit(":", 1)[1])
    stats_a = sim_a.stats
    config = route_config(
        {"a": sim_a.url, "b": sim_b.url},
        a={"concurrency": 1, "pricing": {"default": "0.10"}},
        b={"pricing": {"default": "0.25"}},
    )
    phones = numbers(300)
    run_id = await setup(conn, pool, config, phones, "failover")
    # every message was estimated on the first account, the one the route chooses now
    assert {r["account"] for r in await rows(conn, run_id)} == {"a"}
    sent_by_a = 60
    wrapped = AfterRequests(adapters(config, session)["a"], sent_by_a, sim_a.close)
    metrics = Metrics()
    dispatcher = Dispatcher(
        pool,
        config,
        "d1",
        {"a": wrapped, "b": adapters(config, session)["b"]},  # type: ignore[dict-item]
        metrics=metrics,
    )
    await dispatcher.drain()
    down = await conn.fetchrow("SELECT * FROM account_health WHERE account = 'a'")
    assert (down["up"], down["reason"]) == (False, "failing")
    assert "connect_error" in down["detail"]
    # now the account answers again, but 500 to everything (its probe included)
    sim_a = await simulator(port_a)
    sim_a.app[ACCOUNTS].set("simulator", up=False)
    try:
        await until_final(dispatcher, conn, run_id)
        deadline = time.monotonic() + 10
        while not sim_a.stats.server_errors:  # the next probe meets the 500s
            assert time.monotonic() < deadline
            await dispatcher.serve_once()
            await asyncio.sleep(0.1)
        assert await conn.fetchval("SELECT up FROM account_health WHERE account = 'a'") is False
        assert sim_a.stats.per_number == {}  # no message went to it
    finally:
        await dispatcher.stop(timedelta(seconds=1))
        await sim_a.close()
        await sim_b.close()

    final = await rows(conn, run_id)
    assert {r["status"] for r in final} == {"sent"}
    assert once_each(phones, stats_a, sim_b.stats)  # no number got two messages
    by_account = Counter(r["account"] for r in final)
    assert by_account == {"a": sent_by_a, "b": 300 - sent_by_a}
    assert set(stats_a.per_number) == {r["phone"] for r in final if r["account"] == "a"}
    moved = [r for r in final if r["tried_accounts"] == ["a", "b"]]
    assert moved and all(r["account"] == "b" for r in moved)  # tried a, carried by b
    assert {tuple(r["tried_accounts"]) for r in final} <= {("a",), ("b",), ("a", "b")}
    assert metrics.reroutes.labels("a", "b")._value.get() == len(moved)
    assert metrics.account_up.labels("a")._value.get() == 0
    # costs follow the route: each message costs what its carrier charges
    assert {(r["account"], r["cost"]) for r in final} == {
        ("a", Decimal("0.10")),
        ("b", Decimal("0.25")),
    }
    # receipts match only the account that carried the message
    carried_by_b = await conn.fetchrow(
        "SELECT id, provider_message_id FROM messages WHERE run_id = $1 AND account = 'b'"
        " AND tried_accounts = '{a,b}' LIMIT 1",
        run_id,
    )
    for account in ("a", "b"):
        rows_ = ReceiptRows()
        rows_.add(
            account,
            Receipt(carried_by_b["provider_message_id"], None, S.DELIVERED, "delivered"),
        )
        await store_receipts(conn, rows_, "webhook")
    await Reconciler(pool, retry_after=timedelta(hours=1)).apply_pending()
    matched = await conn.fetch(
        "SELECT account, message_id, applied_at IS NOT NULL AS applied FROM receipts"
        " ORDER BY account"
    )
    assert [(r["account"], r["message_id"], r["applied"]) for r in matched] == [
        ("a", None, False),
        ("b", carried_by_b["id"], True),
    ]
    assert (
        await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", carried_by_b["id"])
        == "delivered"
    )
    report = await reports.runs_report(conn, "failover", run_id)
    per_account = {r["account"]: r for r in report.table("accounts").dicts()}
    assert per_account["a"]["accepted"] == sent_by_a
    assert per_account["b"]["accepted"] == 300 - sent_by_a
    assert per_account["b"]["rerouted"] == len(moved)
    assert per_account["b"]["cost"] == (300 - sent_by_a) * Decimal("0.25")


async def test_an_account_that_recovers_gets_its_traffic_back(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim_a, await simulator() as sim_b:
        sim_a.app[ACCOUNTS].set("simulator", up=False)  # an outage from the start
        config = route_config({"a": sim_a.url, "b": sim_b.url})
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        first = numbers(100)
        run1 = await setup(conn, pool, config, first, "during")
        await until_final(dispatcher, conn, run1)
        assert Counter(r["account"] for r in await rows(conn, run1)) == {"b": 100}
        assert dispatcher.health.is_down("a")

        sim_a.app[ACCOUNTS].set("simulator", up=True)  # the outage ends
        deadline = time.monotonic() + 10
        while dispatcher.health.is_down("a"):  # the next probe, after its cool-off
            assert time.monotonic() < deadline
            await dispatcher.health.refresh()
            await asyncio.gather(*dispatcher.health._probes.values())
            await asyncio.sleep(0.1)
        assert await conn.fetchval("SELECT up FROM account_health WHERE account = 'a'")

        second = numbers(100, start=2000001)
        run2 = await setup(conn, pool, config, second, "after")
        await until_final(dispatcher, conn, run2)
        await dispatcher.stop(timedelta(seconds=1))
        final = await rows(conn, run2)
        assert {r["status"] for r in final} == {"sent"}
        assert Counter(r["account"] for r in final) == {"a": 100}
        assert once_each(first + second, sim_a.stats, sim_b.stats)


async def test_cheapest_picks_the_account_per_prefix(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim_a, await simulator() as sim_b:
        config = route_config(
            {"a": sim_a.url, "b": sim_b.url},
            "cheapest",
            a={"pricing": {"prefixes": {"2782": "0.10", "2783": "0.50"}}},
            b={"pricing": {"prefixes": {"2782": "0.30", "2783": "0.20"}, "default": "0.9"}},
        )
        vodacom, mtn = numbers(30, prefix="+2782"), numbers(20, prefix="+2783")
        await add_contacts(conn, [{"phone": p} for p in vodacom + mtn], groups=["mix"])
        spec = campaign("mix", provider="main", audience={"groups": ["mix"]})

        preview = await campaign_preview.preview_campaign(conn, spec, config)
        assert preview.by_account == {
            "a": (30, 30 * campaigns.Decimal("0.10")),
            "b": (20, 20 * campaigns.Decimal("0.20")),
        }
        assert preview.cost == campaigns.Decimal("7.00")

        run_id = await fire_and_expand(conn, pool, spec, config)
        estimated = await conn.fetch(
            "SELECT account, count(*) AS n, sum(cost) AS cost FROM messages"
            " WHERE run_id = $1 GROUP BY account ORDER BY account",
            run_id,
        )
        assert [(r["account"], r["n"], r["cost"]) for r in estimated] == [
            ("a", 30, campaigns.Decimal("3.00")),
            ("b", 20, campaigns.Decimal("4.00")),
        ]
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        await until_final(dispatcher, conn, run_id)
        await dispatcher.stop(timedelta(seconds=1))
        assert set(sim_a.stats.per_number) == set(vodacom)
        assert set(sim_b.stats.per_number) == set(mtn)


class InFlight:
    """Counts requests in flight across every wrapped adapter."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def wrap(self, inner: Adapter[Any]) -> Any:
        tracker = self

        class Wrapped:
            name, account = inner.name, inner.account
            max_batch, idempotent_sends = inner.max_batch, inner.idempotent_sends

            async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
                tracker.now += 1
                tracker.peak = max(tracker.peak, tracker.now)
                try:
                    return await inner.send(batch)
                finally:
                    tracker.now -= 1

            async def check(self) -> str:
                return await inner.check()

        return Wrapped()


async def test_spread_sends_through_every_account_at_once(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """Each account takes one request at a time; the route keeps both busy, in proportion
    to their rates, so it sends faster than either account could alone."""
    async with (
        await simulator(latency=0.02) as sim_a,
        await simulator(latency=0.02) as sim_b,
        await simulator(latency=0.02) as sim_c,
    ):
        one = {"concurrency": 1, "rate": 100}
        config = route_config(
            {"a": sim_a.url, "b": sim_b.url, "c": sim_c.url},
            "spread",
            a=one,
            b=one,
            c={"concurrency": 1, "rate": 200},
        )
        phones = numbers(200)
        run_id = await setup(conn, pool, config, phones, "spread")
        estimated = Counter(r["account"] for r in await rows(conn, run_id))
        assert estimated == {"a": 50, "b": 50, "c": 100}  # in proportion to the rates
        flight = InFlight()
        wrapped = {name: flight.wrap(a) for name, a in adapters(config, session).items()}
        dispatcher = Dispatcher(pool, config, "d1", wrapped)
        assert dispatcher.routing.rate("main", ["a", "b", "c"]) == 400  # the sum
        await until_final(dispatcher, conn, run_id)
        await dispatcher.stop(timedelta(seconds=1))
        assert flight.peak >= 2  # more requests in flight than any one account allows
        carried = Counter(r["account"] for r in await rows(conn, run_id))
        assert carried == estimated
        assert once_each(phones, sim_a.stats, sim_b.stats, sim_c.stats)


async def test_two_daemons_agree_on_an_accounts_health(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim_a, await simulator() as sim_b:
        sim_a.app[ACCOUNTS].set("simulator", up=False)
        config = route_config({"a": sim_a.url, "b": sim_b.url})
        config_slow_probe = config.model_copy(
            update={"health": config.health.model_copy(update={"cooloff": timedelta(hours=1)})}
        )
        first = Dispatcher(pool, config_slow_probe, "d1", adapters(config, session))
        run1 = await setup(conn, pool, config, numbers(50), "one")
        await until_final(first, conn, run1)
        assert first.health.is_down("a")
        seen_by_a = sim_a.stats.requests

        second = Dispatcher(pool, config_slow_probe, "d2", adapters(config, session))
        run2 = await setup(conn, pool, config, numbers(50, start=3000001), "two")
        await until_final(second, conn, run2)
        assert second.health.is_down("a")  # it read what the first one recorded
        assert sim_a.stats.requests == seen_by_a  # and never tried the account itself
        assert Counter(r["account"] for r in await rows(conn, run2)) == {"b": 50}
        await first.stop(timedelta(seconds=1))
        await second.stop(timedelta(seconds=1))


async def test_two_daemons_sending_at_once_fail_over_together(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    async with await simulator() as sim_a, await simulator() as sim_b:
        sim_a.app[ACCOUNTS].set("simulator", up=False)
        config = route_config({"a": sim_a.url, "b": sim_b.url}, a={"concurrency": 2})
        config = config.model_copy(
            update={"health": config.health.model_copy(update={"cooloff": timedelta(hours=1)})}
        )
        phones = numbers(200)
        run_id = await setup(conn, pool, config, phones, "together")
        daemons = [Dispatcher(pool, config, f"d{i}", adapters(config, session)) for i in (1, 2)]
        await asyncio.gather(*(until_final(d, conn, run_id) for d in daemons))
        for d in daemons:
            await d.stop(timedelta(seconds=1))
        assert all(d.health.is_down("a") for d in daemons)
        # each daemon sent at most a few requests to the account before it was down
        assert sim_a.stats.requests <= 2 * (HEALTH["down_after"] + 2)  # type: ignore[operator]
        final = await rows(conn, run_id)
        assert {(r["status"], r["account"]) for r in final} == {("sent", "b")}
        assert once_each(phones, sim_a.stats, sim_b.stats)


async def test_unknown_messages_are_never_rerouted(
    conn: asyncpg.Connection, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """The first account takes each request and answers too late: every such message is
    ``unknown`` (it may have been sent) and stays on that account; the rest go through the
    second once the first is marked down for its timeouts."""
    async with await simulator(timeouts=1.0, hang=3) as sim_a, await simulator() as sim_b:
        config = route_config(
            {"a": sim_a.url, "b": sim_b.url}, a={"timeout": "0.3s", "concurrency": 2}
        )
        # no probe during the test: the account stays down once its timeouts put it down
        config = config.model_copy(
            update={"health": config.health.model_copy(update={"cooloff": timedelta(hours=1)})}
        )
        phones = numbers(80)
        run_id = await setup(conn, pool, config, phones, "timeouts")
        dispatcher = Dispatcher(pool, config, "d1", adapters(config, session))
        await until_final(dispatcher, conn, run_id)
        await dispatcher.stop(timedelta(seconds=1))
        final = await rows(conn, run_id)
        unknown = [r for r in final if r["status"] == "unknown"]
        assert unknown  # the timeouts before the account went down
        assert all(r["account"] == "a" and r["tried_accounts"] == ["a"] for r in unknown)
        assert not {r["phone"] for r in unknown} & set(sim_b.stats.per_number)
        rest = [r for r in final if r["status"] != "unknown"]
        assert {r["status"] for r in rest} == {"sent"}
        assert {r["account"] for r in rest} == {"b"}
        assert (
            await conn.fetchval("SELECT reason FROM account_health WHERE account = 'a'")
            == "failing"
        )
