"""The Zingle and Sunshine Conversations adapters against the simulator over real HTTP.

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
from engine.providers.simulator import (
    FAMILIES,
    FamilySettings,
    RunningSimulator,
    SimulatorSettings,
)
from engine.providers.sunshine import SunshineAccount, SunshineAdapter, app_jwt
from engine.providers.zingle import ZingleAccount, ZingleAdapter
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"
SUNCO_SECRET = "2vErhBhv81FZ5YXbC5XElVcnoNSqz0XjhqSYII4AOT3GCA5UojDCT07Z9NG"

# --- fixtures ----------------------------------------------------------------------------------


def settings(**families: FamilySettings) -> SimulatorSettings:
    return SimulatorSettings(seed=11, families=families, post_workers=1)


def zingle(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZingleAdapter:
    data = {"type": "zingle", "username": "ops@example.com", "password": "pw",
            "service_id": SERVICE, "channel_type_id": "0e3d71ee-9518-4b9b-b95a-dea251829887",
            "sender": "+17605554396", "base_url": url, "webhook_secret": "z-secret", **extra}
    account = ZingleAccount.model_validate({k: v for k, v in data.items() if v is not None})
    made = adapter_for("zingle", account, session)
    assert isinstance(made, ZingleAdapter)
    return made


def sunco(session: aiohttp.ClientSession, url: str, **extra: Any) -> SunshineAdapter:
    account = SunshineAccount.model_validate(
        {"type": "sunshine", "app_id": "5d8cff3cd55b040010928b5b",
         "key_id": "app_67a0e949f0305f4a391e9d97", "key_secret": SUNCO_SECRET,
         "integration_id": "5e4af71a81966cfff3ef6550", "base_url": url,
         "webhook_secret": "s-secret", **extra}
    )
    made = adapter_for("sunco", account, session)
    assert isinstance(made, SunshineAdapter)
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
    sim.app[FAMILIES]["zingle"].settings = FamilySettings(delivered=0.0, undelivered=0.0,
                                                          receipt_delay=0.3)
    (bad,) = await adapter.send([msg(2, "+18585551002")])
    assert (good.outcome, bad.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    ids = [good.provider_message_id or "", bad.provider_message_id or ""]
    early = await adapter.poll(ids)
    assert [(r.status, r.provider_status) for r in early] == [(MessageStatus.SENT, "queued")] * 2
    await asyncio.sleep(0.4)
    late = await adapter.poll([*ids, "no-such-id"])
    assert [(r.provider_message_id, r.status, r.provider_status) for r in late] == [
        (ids[0], MessageStatus.SENT, "executed"), (ids[1], MessageStatus.UNDELIVERED, "failed")]
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
    assert (wrong.outcome, wrong.error_code) == (Outcome.REJECTED, "2601")
    (basic,) = await zingle(session, sim.url, password="right").send([msg(2, "+18585551002")])
    assert basic.outcome is Outcome.ACCEPTED
    bearer = zingle(session, sim.url, password="right", auth="jwt")  # a JWT from the JWT API
    (jwt,) = await bearer.send([msg(3, "+18585551003")])
    assert jwt.outcome is Outcome.ACCEPTED
    assert [r.provider_status for r in await bearer.poll([jwt.provider_message_id or ""])] == [
        "executed"]
    assert await zingle(session, sim.url).poll([jwt.provider_message_id or ""]) == []


async def test_zingle_429_and_500_are_retry(
    session: aiohttp.ClientSession, start_simulator: Any,
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
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/zingle",
                            webhook_secret="z-secret")
    sim = await start_simulator(settings(zingle=family))
    adapter = zingle(session, sim.url)
    receiver.adapters["zingle"] = adapter
    (sent,) = await adapter.send([msg(1, "+18585551001")])
    assert sent.outcome is Outcome.ACCEPTED
    for text in ("hello", "STOP", "start"):
        async with session.post(f"{sim.url}/sim/inbound/zingle",
                                json={"from": "+18585551001", "text": text}) as resp:
            assert resp.status == 202
    await receiver.wait_for(lambda: len(receiver.opt_changes()) == 2)
    await settled(sim)
    assert [(c.phone, c.opted_out) for c in receiver.opt_changes()] == [
        ("+18585551001", True), ("+18585551001", False)]
    assert receiver.receipts() == []  # Zingle posts no delivery receipts
    assert (len(receiver.events), receiver.refused) == (2, 0)
    assert sim.stats.receipts_posted == 2  # the two webhooks; "hello" posted nothing


async def test_zingle_opt_in_webhook_with_a_wrong_secret_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/zingle",
                            webhook_secret="not-it")
    sim = await start_simulator(settings(zingle=family).model_copy(update={"post_attempts": 1}))
    receiver.adapters["zingle"] = zingle(session, sim.url)
    async with session.post(f"{sim.url}/sim/inbound/zingle",
                            json={"from": "+18585551001", "text": "STOP"}) as resp:
        assert resp.status == 202
    await receiver.wait_for(lambda: receiver.refused == 1)
    await settled(sim)
    assert (receiver.events, sim.stats.receipts_dropped) == ([], 1)


# --- Sunshine Conversations --------------------------------------------------------------------


async def test_sunshine_send_and_receipts_arrive_as_v2_envelopes(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/sunco",
                            webhook_secret="s-secret", delivered=1.0)
    sim = await start_simulator(settings(sunshine=family))
    adapter = sunco(session, sim.url)
    receiver.adapters["sunco"] = adapter
    (one,) = await adapter.send([msg(1, "+15145550001")])
    (two,) = await adapter.send([msg(2, "+15145550002")])
    assert {one.outcome, two.outcome} == {Outcome.ACCEPTED}
    await receiver.wait_for(lambda: len(receiver.receipts()) == 4)
    got = {(r.provider_message_id, r.status) for r in receiver.receipts()}
    assert got == {(p, s) for p in (one.provider_message_id, two.provider_message_id)
                   for s in (MessageStatus.SENT, MessageStatus.DELIVERED)}
    assert all(r.event_id and r.occurred_at for r in receiver.receipts())
    assert len({r.event_id for r in receiver.receipts()}) == 4
    assert any(len(events.receipts) > 1 for _, events in receiver.events)  # several per call
    assert receiver.refused == 0


async def test_sunshine_failure_receipt_carries_the_error(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/sunco",
                            webhook_secret="s-secret", delivered=0.0, undelivered=1.0,
                            sent_receipts=False)
    sim = await start_simulator(settings(sunshine=family))
    adapter = sunco(session, sim.url)
    receiver.adapters["sunco"] = adapter
    (result,) = await adapter.send([msg(1, "+15145550001")])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 1)
    (receipt,) = receiver.receipts()
    assert (receipt.provider_message_id, receipt.status, receipt.error_code) == (
        result.provider_message_id, MessageStatus.FAILED, "undeliverable")


async def test_sunshine_a_wrong_api_key_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/sunco",
                            webhook_secret="other", sent_receipts=False)
    sim = await start_simulator(settings(sunshine=family).model_copy(update={"post_attempts": 1}))
    adapter = sunco(session, sim.url)
    receiver.adapters["sunco"] = adapter
    await adapter.send([msg(1, "+15145550001")])
    await receiver.wait_for(lambda: receiver.refused == 1)
    await settled(sim)
    assert (receiver.events, sim.stats.receipts_dropped) == ([], 1)


async def test_sunshine_basic_and_jwt_auth_are_verified(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(sunshine=FamilySettings(require_token=SUNCO_SECRET)))
    for auth in ("basic", "jwt"):
        (ok,) = await sunco(session, sim.url, auth=auth).send([msg(1, "+15145550001")])
        assert ok.outcome is Outcome.ACCEPTED, auth
        (wrong,) = await sunco(session, sim.url, auth=auth, key_secret="nope").send(
            [msg(2, "+15145550002")])
        assert (wrong.outcome, wrong.error_code) == (Outcome.REJECTED, "unauthorized"), auth
    forged = app_jwt("app_x", SUNCO_SECRET).rsplit(".", 1)[0] + ".AAAA"
    async with session.post(f"{sim.url}/v1.1/apps/a/notifications", json={},
                            headers={"Authorization": f"Bearer {forged}"}) as resp:
        assert resp.status == 401
        assert (await resp.json()) == {"errors": [
            {"code": "unauthorized", "title": "missing or wrong credentials"}]}
    assert sim.stats.unauthorized == 3


async def test_sunshine_rejections_and_validation(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    adapter = sunco(session, sim.url)
    (blocked,) = await adapter.send([msg(1, "+15145550000")])
    assert (blocked.outcome, blocked.error_code) == (Outcome.REJECTED, "bad_request")
    (local,) = await adapter.send([msg(2, "5145550002")])
    assert (local.outcome, local.error_code) == (Outcome.REJECTED, "bad_request")
    async with session.post(f"{sim.url}/v1/apps/a/notifications",
                            json={"destination": {"integrationId": "i",
                                                  "destinationId": "+15145550003"},
                                  "author": {"role": "appUser"},
                                  "message": {"type": "text", "text": "x"}},
                            headers=adapter.auth_headers()) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["title"] == "author.role must be appMaker"
    assert sim.stats.accepted == 0


async def test_sunshine_429_is_retry_with_retry_after(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(sunshine=FamilySettings(rate_limited=1.0, retry_after=2)))
    (result,) = await sunco(session, sim.url).send([msg(1, "+15145550001")])
    assert (result.outcome, result.retry_after, result.error_code) == (Outcome.RETRY, 2, "429")
    assert sim.stats.per_number == {}


async def test_sunshine_server_error_is_unknown(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(sunshine=FamilySettings(server_errors=1.0)))
    (result,) = await sunco(session, sim.url).send([msg(1, "+15145550001")])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "500")


async def test_sunshine_stop_reply_is_an_opt_out(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/sunco",
                            webhook_secret="s-secret")
    sim = await start_simulator(settings(sunshine=family))
    receiver.adapters["sunco"] = sunco(session, sim.url)
    async with session.post(f"{sim.url}/sim/inbound/sunshine",
                            json={"from": "+15145550001", "text": "STOP"}) as resp:
        assert resp.status == 202
    await receiver.wait_for(lambda: len(receiver.events) == 1)
    (_, events) = receiver.events[0]
    assert [(i.from_, i.text) for i in events.inbound] == [("+15145550001", "STOP")]
    assert [(o.phone, o.opted_out) for o in events.opt_changes] == [("+15145550001", True)]
