"""Zingle against the strict simulator and a real PostgreSQL: JWT renewal, the bounded
polling schedule, and an unblock that lifts only Zingle's own block."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.poller import Poller
from engine.providers import adapter_for
from engine.providers.base import Inbound, Outbound, Outcome, WebhookEvents
from engine.providers.zingle import ZingleAccount, ZingleAdapter
from engine.receipt_writer import ReceiptWriter
from engine.scheduler import complete_runs
from engine.simulator import FAMILIES, FamilySettings, SimulatorSettings
from engine.simulator.families.zingle import ZingleRoutes

SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zingle"
BASIC = {"Authorization": "Basic " + base64.b64encode(b"ops@example.com:pw").decode()}


def zingle(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZingleAdapter:
    data = {
        "type": "zingle",
        "username": "ops@example.com",
        "password": "pw",
        "service_id": SERVICE,
        "channel_type_id": "0e3d71ee-9518-4b9b-b95a-dea251829887",
        "base_url": url,
        **extra,
    }
    account = ZingleAccount.model_validate({k: v for k, v in data.items() if v is not None})
    made = adapter_for("zingle", account, session)
    assert isinstance(made, ZingleAdapter)
    return made


def settings(**family: Any) -> SimulatorSettings:
    return SimulatorSettings(seed=3, families={"zingle": FamilySettings(**family)})


def routes_of(sim: Any) -> ZingleRoutes:
    routes = sim.app[FAMILIES]["zingle"]
    assert isinstance(routes, ZingleRoutes)
    return routes


def msg(n: int) -> Outbound:
    return Outbound(n, f"+1858555{n:04d}", f"message {n}")


# --- JWTs ---------------------------------------------------------------------------------------


async def test_an_expired_jwt_is_renewed_on_the_401_and_nothing_fails(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    adapter = zingle(session, sim.url, auth="jwt")
    (first,) = await adapter.send([msg(1)])
    assert first.outcome is Outcome.ACCEPTED
    assert routes_of(sim).counts["jwt"] == 1
    routes_of(sim).expire_credentials()  # mid-run: every JWT issued so far now gets 401
    (second,) = await adapter.send([msg(2)])
    assert second.outcome is Outcome.ACCEPTED
    assert sim.stats.unauthorized == 1  # the one 401 that triggered the renewal
    assert (routes_of(sim).counts["jwt"], adapter.jwts_obtained) == (2, 2)
    assert len(await adapter.poll([second.provider_message_id or ""])) == 1  # the lookup too


async def test_a_short_lived_jwt_is_renewed_before_it_expires(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    routes_of(sim).jwt_ttl = 0.3
    adapter = zingle(session, sim.url, auth="jwt")
    for n in range(1, 4):
        (result,) = await adapter.send([msg(n)])
        assert result.outcome is Outcome.ACCEPTED
        await asyncio.sleep(0.3)  # the JWT's whole lifetime: each send needs a new one
    assert routes_of(sim).counts["jwt"] == 3
    assert routes_of(sim).counts["expired_jwt"] == 0  # renewed before, never refused
    assert sim.stats.unauthorized == 0


async def test_a_jwt_without_credentials_to_renew_it_fails_authentication(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    async with session.get(f"{sim.url}/v1/auth/jwt", headers=BASIC) as resp:
        answer = await resp.json()
    token = answer["result"].get("jwt") or answer["result"]["token"]
    adapter = zingle(session, sim.url, username=None, password=None, jwt=token)
    (ok,) = await adapter.send([msg(1)])
    assert ok.outcome is Outcome.ACCEPTED
    routes_of(sim).expire_credentials()
    (refused,) = await adapter.send([msg(2)])
    assert (refused.outcome, refused.error_code) == (Outcome.ACCOUNT, "2601")
    assert routes_of(sim).counts["jwt"] == 1  # the adapter could not renew it


async def test_the_simulator_is_strict(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    send = f"{sim.url}/v1/services/{SERVICE}/messages"
    async with session.post(
        send, data=b"{}", headers={**BASIC, "Content-Type": "text/plain"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["status"]["error_code"] == 2604
    async with session.post(send, json={}, headers={"Authorization": "Bearer not-a-jwt"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["status"]["error_code"] == 2601
    async with session.get(f"{sim.url}/v1/auth/jwt", headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 401  # the JWT API takes Basic credentials only
    async with session.post(f"{send}/extra", json={}, headers=BASIC) as resp:
        assert resp.status == 404
        assert (await resp.json())["status"]["status_code"] == 404
    assert sim.stats.accepted == 0


# --- the polling schedule -------------------------------------------------------------------------


async def _sent_message(
    conn: asyncpg.Connection, provider_id: str, validity: timedelta | None
) -> tuple[int, int]:
    cid = await conn.fetchval(
        "INSERT INTO campaigns (name, spec, spec_hash) VALUES ('z', '{}', 'h') RETURNING id"
    )
    run_id = await conn.fetchval(
        "INSERT INTO campaign_runs (campaign_id, scheduled_for, status, spec, counts)"
        " VALUES ($1, now(), 'sending', '{}', '{}') RETURNING id",
        cid,
    )
    now = datetime.now(UTC)
    mid = await conn.fetchval(
        "INSERT INTO messages (run_id, phone, account, status, provider_message_id, sent_at,"
        " expires_at, segments) VALUES ($1, '+18585550001', 'zingle', 'sent', $2, $3, $4, 1)"
        " RETURNING id",
        run_id,
        provider_id,
        now,
        None if validity is None else now + validity,
    )
    return run_id, mid


async def _pass_time(conn: asyncpg.Connection, step: timedelta) -> None:
    """Move the message's clock on by ``step`` (its times move back)."""
    await conn.execute(
        "UPDATE messages SET sent_at = sent_at - $1::interval, expires_at = expires_at - $1,"
        " next_poll_at = CASE WHEN next_poll_at = 'infinity' THEN next_poll_at"
        " ELSE next_poll_at - $1::interval END",
        step,
    )


@pytest.mark.parametrize(
    ("validity", "deadline"),
    [(None, timedelta(hours=72)), (timedelta(hours=24), timedelta(hours=24))],
    ids=["receipt-window", "campaign-validity"],
)
async def test_a_message_never_final_costs_a_bounded_number_of_lookups(
    session: aiohttp.ClientSession,
    start_simulator: Any,
    pool: asyncpg.Pool,
    conn: asyncpg.Connection,
    validity: timedelta | None,
    deadline: timedelta,
) -> None:
    sim = await start_simulator(settings(receipt_delay=10**7))  # never settles
    adapter = zingle(session, sim.url)
    (sent,) = await adapter.send([msg(1)])
    run_id, mid = await _sent_message(conn, sent.provider_message_id or "", validity)
    poller = Poller(pool, {"zingle": adapter})  # the default schedule, 72 h window
    bound = poller.looks_at_most(deadline)
    assert bound == (8 if validity else 16)  # 1, 5, 15, 60 min, then 6-hourly, then the end
    elapsed = timedelta(0)
    while elapsed < deadline + timedelta(hours=12):
        step = timedelta(minutes=1) if elapsed < timedelta(hours=2) else timedelta(minutes=30)
        await _pass_time(conn, step)
        elapsed += step
        assert await poller.poll_once() == 0  # "still sent" is no news
    lookups = routes_of(sim).counts["lookup"]
    assert 5 <= lookups <= bound
    row = await conn.fetchrow(
        "SELECT polls, next_poll_at = 'infinity' AS over FROM messages WHERE id = $1", mid
    )
    assert (row["polls"], row["over"]) == (lookups, True)
    # polling is over: the run completes, though Zingle never said more than "sent"
    assert await complete_runs(conn, timedelta(hours=72)) == 1
    assert (
        await conn.fetchval("SELECT status FROM campaign_runs WHERE id = $1", run_id) == "completed"
    )


# --- block and unblock ---------------------------------------------------------------------------


async def test_an_unblock_lifts_only_the_suppression_zingles_block_made(
    pool: asyncpg.Pool, conn: asyncpg.Connection, session: aiohttp.ClientSession
) -> None:
    adapter = zingle(session, "http://127.0.0.1:9")
    sample = (FIXTURES / "opt_in_sample_payload.json").read_bytes()  # +14065551212, a block
    block = adapter.parse_webhook("application/json", sample, {})
    unblock = adapter.parse_webhook(
        "application/json", sample.replace(b'"block"', b'"unblock"'), {}
    )
    writer = ReceiptWriter(pool)
    await writer.start()
    try:
        # another number: the recipient replied STOP through another provider first
        await writer.write("zen", WebhookEvents(inbound=(Inbound("+14065551213", "STOP"),)))
        other_block = adapter.parse_webhook(
            "application/json", sample.replace(b"+14065551212", b"+14065551213"), {}
        )
        await writer.write("zingle", other_block)  # already suppressed: Zingle made nothing
        await writer.write("zingle", block)
        await writer.write("zingle-2", block)  # another Zingle account's block of it
        sources = dict(await conn.fetch("SELECT phone, source FROM suppressions"))
        assert sources == {"+14065551212": "webhook:zingle", "+14065551213": "sms-reply:zen"}
        await writer.write("zingle-2", unblock)  # not its suppression: nothing lifted
        (lift,) = unblock.opt_changes
        await writer.write(
            "zingle", WebhookEvents(opt_changes=(replace(lift, phone="+14065551213"),))
        )  # Zingle's unblock of the STOP reply
        assert dict(await conn.fetch("SELECT phone, source FROM suppressions")) == sources
        await writer.write("zingle", unblock)
        assert dict(await conn.fetch("SELECT phone, source FROM suppressions")) == {
            "+14065551213": "sms-reply:zen"
        }
    finally:
        await writer.stop()
