"""The Zingle adapter (Sunshine: test_simulator_sunshine.py) against the simulator over real HTTP.

Each test starts a simulator on a free port of 127.0.0.1 and, where webhooks matter, a small
receiving app that does what the engine's webhook listener does: authenticate the call with
the adapter's ``webhook_authentic`` and read it with ``parse_webhook``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.zingle import ZingleAccount, ZingleAdapter
from engine.simulator import FAMILIES, FamilySettings, RunningSimulator, SimulatorSettings
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"

# --- fixtures ----------------------------------------------------------------------------------


def settings(**families: FamilySettings) -> SimulatorSettings:
    return SimulatorSettings(seed=11, families=families, post_workers=1)


def zingle(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZingleAdapter:
    data = {
        "type": "zingle",
        "username": "ops@example.com",
        "password": "pw",
        "service_id": SERVICE,
        "channel_type_id": "0e3d71ee-9518-4b9b-b95a-dea251829887",
        "sender": "+17605554396",
        "base_url": url,
        "webhook_secret": "z-secret",
        **extra,
    }
    account = ZingleAccount.model_validate({k: v for k, v in data.items() if v is not None})
    made = adapter_for("zingle", account, session)
    assert isinstance(made, ZingleAdapter)
    return made


def msg(n: int, to: str, body: str | None = None) -> Outbound:
    return Outbound(n, to, f"message {n}" if body is None else body, None)


async def settled(sim: RunningSimulator) -> None:
    async with asyncio.timeout(5):
        await sim.receipts_done()


# --- Zingle ------------------------------------------------------------------------------------


async def test_zingle_send_then_poll_sees_the_status_evolve(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(zingle=FamilySettings(delivered=1.0, receipt_delay=0.3)))
    adapter = zingle(session, sim.url)
    (good,) = await adapter.send([msg(1, "+18585551001")])
    sim.app[FAMILIES]["zingle"].settings = FamilySettings(
        delivered=0.0, undelivered=0.0, receipt_delay=0.3
    )
    (bad,) = await adapter.send([msg(2, "+18585551002")])
    assert (good.outcome, bad.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    ids = [good.provider_message_id or "", bad.provider_message_id or ""]
    early = await adapter.poll(ids)
    assert [(r.status, r.provider_status) for r in early] == [(MessageStatus.SENT, "queued")] * 2
    await asyncio.sleep(0.4)
    late = await adapter.poll([*ids, "no-such-id"])
    assert [(r.provider_message_id, r.status, r.provider_status) for r in late] == [
        (ids[0], MessageStatus.SENT, "executed"),
        (ids[1], MessageStatus.UNDELIVERED, "failed"),
    ]
    assert late[0].occurred_at is not None
    assert late[1].error_detail == "Carrier rejected the message"
    assert sim.stats.accepted == 2


async def test_zingle_a_repeated_uuid_is_delivered_once(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    """A send that timed out is retried with the same uuid; Zingle does not send it twice."""
    sim = await start_simulator(settings(zingle=FamilySettings(timeouts=1.0, hang=30)))
    adapter = zingle(session, sim.url, timeout="300ms")
    (first,) = await adapter.send([msg(5, "+18585551005")])
    assert (first.outcome, first.error_code) == (Outcome.RETRY, "timeout")
    assert sim.stats.per_number == {"+18585551005": 1}  # it was taken before the hang

    sim.app[FAMILIES]["zingle"].settings = FamilySettings()
    (second,) = await adapter.send([msg(5, "+18585551005")])
    (third,) = await adapter.send([msg(5, "+18585551005")])
    assert second.outcome is Outcome.ACCEPTED
    assert third.provider_message_id == second.provider_message_id
    assert (sim.stats.accepted, sim.stats.duplicates) == (1, 2)
    assert sim.stats.per_number == {"+18585551005": 1}

    (other,) = await adapter.send([msg(6, "+18585551005")])  # a new message: a new uuid
    assert other.provider_message_id != second.provider_message_id
    assert sim.stats.per_number == {"+18585551005": 2}


async def test_zingle_rejections_in_zingle_codes(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    adapter = zingle(session, sim.url)
    (blocked,) = await adapter.send([msg(1, "+18585550000")])
    assert (blocked.outcome, blocked.error_code) == (Outcome.REJECTED, "3613")
    (bad,) = await adapter.send([msg(2, "858-555-1212")])
    assert (bad.outcome, bad.error_code) == (Outcome.REJECTED, "3613")
    (empty,) = await adapter.send([msg(3, "+18585551003", body=" ")])
    assert (empty.outcome, empty.error_code) == (Outcome.REJECTED, "3602")
    assert (sim.stats.accepted, sim.stats.bad_requests) == (0, 1)


async def test_zingle_credentials_are_checked(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(zingle=FamilySettings(require_token="right")))
    (wrong,) = await zingle(session, sim.url).send([msg(1, "+18585551001")])
    assert (wrong.outcome, wrong.error_code) == (Outcome.ACCOUNT, "2601")
    (basic,) = await zingle(session, sim.url, password="right").send([msg(2, "+18585551002")])
    assert basic.outcome is Outcome.ACCEPTED
    bearer = zingle(session, sim.url, password="right", auth="jwt")  # a JWT from the JWT API
    (jwt,) = await bearer.send([msg(3, "+18585551003")])
    assert jwt.outcome is Outcome.ACCEPTED
    assert [r.provider_status for r in await bearer.poll([jwt.provider_message_id or ""])] == [
        "executed"
    ]
    assert await zingle(session, sim.url).poll([jwt.provider_message_id or ""]) == []


async def test_zingle_429_and_500_are_retry(
    session: aiohttp.ClientSession,
    start_simulator: Any,
) -> None:
    sim = await start_simulator(settings(zingle=FamilySettings(rate_limited=1.0, retry_after=4)))
    (limited,) = await zingle(session, sim.url).send([msg(1, "+18585551001")])
    assert (limited.outcome, limited.retry_after) == (Outcome.RETRY, 4)
    sim.app[FAMILIES]["zingle"].settings = FamilySettings(server_errors=1.0)
    (failed,) = await zingle(session, sim.url).send([msg(1, "+18585551001")])
    assert (failed.outcome, failed.error_code) == (Outcome.RETRY, "500")
    assert sim.stats.per_number == {}


async def test_zingle_stop_and_start_post_the_opt_in_webhook(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/zingle", webhook_secret="z-secret"
    )
    sim = await start_simulator(settings(zingle=family))
    adapter = zingle(session, sim.url)
    receiver.adapters["zingle"] = adapter
    (sent,) = await adapter.send([msg(1, "+18585551001")])
    assert sent.outcome is Outcome.ACCEPTED
    for text in ("hello", "STOP", "start"):
        async with session.post(
            f"{sim.url}/sim/inbound/zingle", json={"from": "+18585551001", "text": text}
        ) as resp:
            assert resp.status == 202
    await receiver.wait_for(lambda: len(receiver.opt_changes()) == 2)
    await settled(sim)
    assert [(c.phone, c.opted_out) for c in receiver.opt_changes()] == [
        ("+18585551001", True),
        ("+18585551001", False),
    ]
    assert receiver.receipts() == []  # Zingle posts no delivery receipts
    assert (len(receiver.events), receiver.refused) == (2, 0)
    assert sim.stats.receipts_posted == 2  # the two webhooks; "hello" posted nothing


async def test_zingle_opt_in_webhook_with_a_wrong_secret_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/zingle", webhook_secret="not-it")
    sim = await start_simulator(settings(zingle=family).model_copy(update={"post_attempts": 1}))
    receiver.adapters["zingle"] = zingle(session, sim.url)
    async with session.post(
        f"{sim.url}/sim/inbound/zingle", json={"from": "+18585551001", "text": "STOP"}
    ) as resp:
        assert resp.status == 202
    await receiver.wait_for(lambda: receiver.refused == 1)
    await settled(sim)
    assert (receiver.events, sim.stats.receipts_dropped) == ([], 1)
