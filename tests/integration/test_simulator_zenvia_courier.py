"""The zenvia adapter against the simulator over real HTTP on 127.0.0.1 (courier's tests are
in test_simulator_courier.py).

A small receiving app does what the engine's webhook listener will do: authenticate each
call with the adapter's ``webhook_authentic`` and read it with ``parse_webhook``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.zenvia import ZenviaAccount, ZenviaAdapter
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

# --- fixtures ----------------------------------------------------------------------------------


def settings(**families: FamilySettings) -> SimulatorSettings:
    return SimulatorSettings(seed=11, families=families)


async def settled(sim: RunningSimulator) -> None:
    async with asyncio.timeout(5):
        await sim.receipts_done()


def msg(n: int, to: str) -> Outbound:
    return Outbound(n, to, f"message {n}")


def zenvia(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZenviaAdapter:
    account = ZenviaAccount.model_validate(
        {
            "type": "zenvia",
            "token": "zen-token",
            "sender": "acme",
            "base_url": url,
            "webhook_secret": "zen-secret",
            **extra,
        }
    )
    made = adapter_for("zen", account, session)
    assert isinstance(made, ZenviaAdapter)
    return made


# --- zenvia --------------------------------------------------------------------------------------


async def test_zenvia_send_and_receipts_with_the_header_secret(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/zen", webhook_secret="zen-secret", delivered=1.0
    )
    sim = await start_simulator(settings(zenvia=family))
    adapter = zenvia(session, sim.url)
    receiver.adapters["zen"] = adapter
    (result,) = await adapter.send([msg(42, "+5511999990001")])
    assert result.outcome is Outcome.ACCEPTED
    await receiver.wait_for(lambda: len(receiver.receipts()) == 2)
    assert {(r.message_id, r.provider_message_id, r.status) for r in receiver.receipts()} == {
        (42, result.provider_message_id, MessageStatus.SENT),
        (42, result.provider_message_id, MessageStatus.DELIVERED),
    }
    assert all(r.event_id and r.occurred_at for r in receiver.receipts())
    assert receiver.refused == 0
    assert sim.stats.per_number == {"5511999990001": 1}


async def test_zenvia_undelivered_carries_its_cause(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/zen",
        webhook_secret="zen-secret",
        delivered=0.0,
        undelivered=1.0,
        sent_receipts=False,
    )
    sim = await start_simulator(settings(zenvia=family))
    receiver.adapters["zen"] = adapter = zenvia(session, sim.url)
    await adapter.send([msg(1, "+5511999990001")])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 1)
    (receipt,) = receiver.receipts()
    assert (receipt.status, receipt.provider_status) == (MessageStatus.UNDELIVERED, "NOT_DELIVERED")
    assert receipt.error_code == "005"


async def test_zenvia_a_wrong_secret_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/zen", webhook_secret="bad", sent_receipts=False
    )
    sim = await start_simulator(settings(zenvia=family).model_copy(update={"post_attempts": 1}))
    receiver.adapters["zen"] = adapter = zenvia(session, sim.url)
    await adapter.send([msg(1, "+5511999990001")])
    await settled(sim)
    assert (receiver.refused, sim.stats.receipts_dropped, receiver.events) == (1, 1, [])


async def test_zenvia_rejections(session: aiohttp.ClientSession, start_simulator: Any) -> None:
    sim = await start_simulator(settings(zenvia=FamilySettings(require_token="zen-token")))
    adapter = zenvia(session, sim.url)
    (blocked,) = await adapter.send([msg(1, "+5511999990000")])
    assert (blocked.outcome, blocked.error_code) == (Outcome.REJECTED, "VALIDATION_ERROR")
    (bad,) = await adapter.send([msg(2, "not a number")])
    assert (bad.outcome, bad.error_code) == (Outcome.REJECTED, "VALIDATION_ERROR")
    (denied,) = await zenvia(session, sim.url, token="wrong").send([msg(3, "+5511999990001")])
    assert (denied.outcome, denied.error_code) == (Outcome.ACCOUNT, "AUTHENTICATION_ERROR")
    assert denied.error_detail == "No authorization token was found"  # the seed's table
    assert sim.stats.per_number == {}


async def test_zenvia_validates_the_request_and_echoes_the_message(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    url, headers = f"{sim.url}/v2/channels/sms/messages", {"X-API-TOKEN": "t"}
    async with session.post(
        url, json={"from": "acme", "to": "5511999990001"}, headers=headers
    ) as resp:
        assert resp.status == 400
        error = await resp.json()
    assert error["code"] == "VALIDATION_ERROR"
    assert "contents" in error["message"]
    body = {
        "from": "acme",
        "to": "5511999990001",
        "externalId": "9",
        "contents": [{"type": "text", "text": "hi"}],
    }
    async with session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        echoed = await resp.json()
    assert {k: echoed[k] for k in ("externalId", "from", "to", "direction", "channel")} == {
        "externalId": "9",
        "from": "acme",
        "to": "5511999990001",
        "direction": "OUT",
        "channel": "sms",
    }
    assert echoed["id"] and echoed["timestamp"]
    assert echoed["contents"] == [{"type": "text", "text": "hi"}]


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ({"rate_limited": 1.0, "retry_after": 4}, Outcome.RETRY),
        ({"server_errors": 1.0}, Outcome.RETRY),
    ],
    ids=["429", "500"],
)
async def test_zenvia_faults(
    session: aiohttp.ClientSession, start_simulator: Any, fault: dict[str, Any], outcome: Outcome
) -> None:
    sim = await start_simulator(settings(zenvia=FamilySettings(**fault)))
    (result,) = await zenvia(session, sim.url).send([msg(1, "+5511999990001")])
    assert result.outcome is outcome
    if "retry_after" in fault:
        assert (result.error_code, result.retry_after) == ("429", 4)
    assert sim.stats.per_number == {}


async def test_zenvia_inbound_stop_is_an_opt_out(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(webhook_url=f"{receiver.url}/webhooks/zen", webhook_secret="zen-secret")
    sim = await start_simulator(settings(zenvia=family))
    receiver.adapters["zen"] = zenvia(session, sim.url)
    async with session.post(
        f"{sim.url}/sim/inbound/zenvia", json={"from": "+5511999990001", "text": "STOP"}
    ) as resp:
        assert resp.status == 202
    await receiver.wait_for(lambda: len(receiver.events) == 1)
    ((_, events),) = receiver.events
    assert (events.inbound[0].from_, events.inbound[0].text) == ("+5511999990001", "STOP")
    assert (events.opt_changes[0].phone, events.opt_changes[0].opted_out) == (
        "+5511999990001",
        True,
    )


async def test_zenvia_subscribe_against_the_simulator(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(zenvia=FamilySettings(require_token="zen-token")))
    made = await zenvia(session, sim.url).subscribe("https://engine.example.com")
    assert set(made) == {"MESSAGE_STATUS", "MESSAGE"}
    assert made["MESSAGE"]["criteria"] == {"channel": "sms", "direction": "IN"}
    assert made["MESSAGE_STATUS"]["webhook"]["headers"] == {"X-Webhook-Secret": "zen-secret"}
    assert all(m["id"] for m in made.values())
