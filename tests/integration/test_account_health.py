"""An account that cannot send (credentials expired, no credit) pauses; nobody is failed.

The simulator's credentials expire (or its credit runs out) mid-run, over real HTTP, with
a real PostgreSQL: before account health, every message sent after that point ended
``failed`` (hundreds per run before the failure brake acted).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.accounts import mark_up
from engine.dispatcher import Dispatcher
from engine.metrics import Metrics
from engine.providers.base import Adapter, Outbound, SendResult
from engine.simulator import RunningSimulator
from engine.simulator.accounts import ACCOUNTS
from tests.integration.test_dispatcher import adapters, config_for, setup_run, simulator

COUNT = 500
EXPIRE_AFTER = 100  # requests answered before the switch is thrown


class SwitchMidRun:
    """Throws the simulator's account switch once ``after`` requests have been answered."""

    def __init__(
        self, inner: Adapter[Any], sim: RunningSimulator, after: int, **switch: bool
    ) -> None:
        self.inner, self.sim, self.after, self.switch = inner, sim, after, switch
        self.name, self.account = inner.name, inner.account
        self.max_batch, self.idempotent_sends = inner.max_batch, inner.idempotent_sends
        self.requests = 0

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results = await self.inner.send(batch)
        self.requests += 1
        if self.requests == self.after:
            self.sim.app[ACCOUNTS].set("simulator", **self.switch)
        return results

    async def check(self) -> str:
        return await self.inner.check()


async def counts(conn: asyncpg.Connection, run_id: int) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status::text, count(*) AS n FROM messages WHERE run_id = $1 GROUP BY status", run_id
    )
    return {r["status"]: r["n"] for r in rows}


@pytest.mark.parametrize(
    ("switch", "reason", "code"),
    [
        ({"valid": False}, "auth", "unauthorized"),
        ({"credit": False}, "credit", "insufficient_credit"),
    ],
    ids=["401-expired-credentials", "402-no-credit"],
)
async def test_an_account_that_cannot_send_pauses_and_fails_nobody(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    switch: dict[str, bool],
    reason: str,
    code: str,
) -> None:
    async with await simulator() as sim:
        config = config_for(sim, concurrency=4)
        run_id, phones = await setup_run(conn, pool, config, COUNT)
        wrapped = SwitchMidRun(adapters(config, session)["sim"], sim, EXPIRE_AFTER, **switch)
        metrics = Metrics()
        first = Dispatcher(
            pool,
            config,
            "d1",
            {"sim": wrapped},  # type: ignore[dict-item]
            metrics=metrics,
        )
        await first.drain()
        await first.stop(timedelta(seconds=1))

        paused = await counts(conn, run_id)
        assert "failed" not in paused
        assert paused["sent"] >= EXPIRE_AFTER and paused["queued"] > 0
        assert paused["sent"] + paused["queued"] == COUNT
        health = await conn.fetchrow("SELECT * FROM account_health WHERE account = 'sim'")
        assert (health["up"], health["reason"]) == (False, reason)
        assert code in health["detail"]
        assert metrics.account_up.labels("sim")._value.get() == 0
        # the refused requests spent no attempt: every queued message is as new
        assert (
            await conn.fetchval(
                "SELECT max(attempts) FROM messages WHERE run_id = $1 AND status = 'queued'", run_id
            )
            == 0
        )
        assert (
            await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
            == "sending"
        )  # the failure brake did not act

        sim.app[ACCOUNTS].set("simulator", valid=True, credit=True)  # renewed
        assert await mark_up(conn, "sim")  # what `engine providers check sim` records
        await Dispatcher(pool, config, "d2", adapters(config, session)).drain()
        assert await counts(conn, run_id) == {"sent": COUNT}
        assert sim.stats.per_number == dict.fromkeys(phones, 1)  # each sent exactly once


async def test_a_down_account_is_not_claimed_by_another_daemon(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
) -> None:
    """Health lives in the database: a daemon that never saw the 401 claims nothing."""
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, _ = await setup_run(conn, pool, config, 20)
        await conn.execute(
            "INSERT INTO account_health (account, up, reason, retry_at)"
            " VALUES ('sim', false, 'auth', now() + interval '1 hour')"
        )
        await Dispatcher(pool, config, "d3", adapters(config, session)).drain()
        assert await counts(conn, run_id) == {"queued": 20}
        assert sim.stats.requests == 0


async def test_a_due_probe_resumes_the_account_when_it_authenticates(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        run_id, _ = await setup_run(conn, pool, config, 20)
        await conn.execute(
            "INSERT INTO account_health (account, up, reason, retry_at)"
            " VALUES ('sim', false, 'auth', now())"
        )
        dispatcher = Dispatcher(pool, config, "d4", adapters(config, session))
        await dispatcher.serve_once()  # starts the probe: GET /sim/v1/account answers 200
        await asyncio_wait_for_probe(dispatcher)
        await dispatcher.drain()
        await dispatcher.stop(timedelta(seconds=1))
        assert await counts(conn, run_id) == {"sent": 20}
        assert await conn.fetchval("SELECT up FROM account_health WHERE account = 'sim'")


async def test_a_failed_probe_backs_off(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
) -> None:
    async with await simulator() as sim:
        config = config_for(sim)
        sim.app[ACCOUNTS].set("simulator", valid=False)
        await conn.execute(
            "INSERT INTO account_health (account, up, reason, retry_at)"
            " VALUES ('sim', false, 'auth', now())"
        )
        dispatcher = Dispatcher(pool, config, "d5", adapters(config, session))
        await dispatcher.serve_once()
        await asyncio_wait_for_probe(dispatcher)
        await dispatcher.stop(timedelta(seconds=1))
        row = await conn.fetchrow(
            "SELECT up, probes, retry_at - checked_at AS wait"
            " FROM account_health WHERE account = 'sim'"
        )
        assert (row["up"], row["probes"]) == (False, 1)
        assert row["wait"] == timedelta(seconds=60)  # 30 s doubled once


async def asyncio_wait_for_probe(dispatcher: Dispatcher) -> None:
    """Wait for the probes the last pass started."""
    import asyncio

    await asyncio.gather(*dispatcher.health._probes.values())
