"""The adapters against the provider simulator over real HTTP on 127.0.0.1.

Each test starts a simulator on a free port and, where receipts matter, a small receiving
app that does what the engine's webhook listener will do: authenticate the call with the
adapter's ``webhook_authentic`` and read it with ``parse_webhook``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.simulator import SimulatorAccount, SimulatorAdapter
from engine.providers.zoomconnect import ZoomConnectAccount, ZoomConnectAdapter
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings
from engine.simulator.server import SIMULATOR, STATS
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

# --- fixtures ----------------------------------------------------------------------------------


def sim_adapter(session: aiohttp.ClientSession, url: str, **extra: Any) -> SimulatorAdapter:
    account = SimulatorAccount.model_validate({"type": "simulator", "base_url": url, **extra})
    made = adapter_for("sim", account, session)
    assert isinstance(made, SimulatorAdapter)
    return made


def zc_adapter(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZoomConnectAdapter:
    account = ZoomConnectAccount.model_validate(
        {
            "type": "zoomconnect",
            "email": "ops@example.com",
            "token": "tok",
            "base_url": url,
            "webhook_secret": "zc-secret",
            **extra,
        }
    )
    made = adapter_for("zc", account, session)
    assert isinstance(made, ZoomConnectAdapter)
    return made


def msg(n: int, to: str) -> Outbound:
    return Outbound(n, to, f"message {n}", None, "sms", "GSM-7", 1)


async def settled(sim: RunningSimulator) -> None:
    """Wait (at most 5 s) until the simulator has posted, or given up on, every receipt."""
    async with asyncio.timeout(5):
        await sim.receipts_done()


def settings(**families: FamilySettings) -> SimulatorSettings:
    return SimulatorSettings(seed=7, families=families)


# --- sending -------------------------------------------------------------------------------------


async def test_simulator_protocol_single_and_bulk(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    single = sim_adapter(session, sim.url)
    (one,) = await single.send([msg(1, "+27821110001")])
    assert one.outcome is Outcome.ACCEPTED
    assert one.provider_message_id

    bulk = sim_adapter(session, sim.url, bulk=True, batch_size=4)
    results = await bulk.send(
        [
            msg(2, "+27821110002"),
            msg(3, "+27821110000"),
            msg(4, "not-a-number"),
            msg(5, "+27821110001"),
        ]
    )
    assert [r.outcome for r in results] == [
        Outcome.ACCEPTED,
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.ACCEPTED,
    ]
    assert [r.error_code for r in results[1:3]] == ["blocked", "invalid_number"]
    stats = sim.stats
    assert stats.requests == 2
    assert (stats.messages, stats.accepted, stats.rejected) == (5, 3, 2)
    assert stats.per_number == {"+27821110001": 2, "+27821110002": 1}


async def test_zoomconnect_single_and_bulk(
    session: aiohttp.ClientSession,
    start_simulator: Any,
) -> None:
    sim = await start_simulator(settings())
    single = zc_adapter(session, sim.url)
    (one,) = await single.send([msg(1, "+27821110001")])
    assert one.outcome is Outcome.ACCEPTED
    (refused,) = await single.send([msg(2, "+27821110000")])
    assert (refused.outcome, refused.error_code) == (Outcome.REJECTED, "2")
    (empty,) = await single.send([Outbound(3, "+27821110003", "", None)])
    assert (empty.outcome, empty.error_code) == (Outcome.REJECTED, "3")

    bulk = zc_adapter(session, sim.url, bulk=True, batch_size=3)
    results = await bulk.send(
        [msg(4, "+27821110004"), msg(5, "+27821110000"), msg(6, "+27821110001")]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]
    assert sim.stats.per_number == {"+27821110001": 2, "+27821110004": 1}
    assert sim.stats.requests == 4


async def test_zoomconnect_credentials_are_checked(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(zoomconnect=FamilySettings(require_token="right")))
    (result,) = await zc_adapter(session, sim.url).send([msg(1, "+27821110001")])
    assert (result.outcome, result.error_code) == (Outcome.ACCOUNT, "401")
    (result,) = await zc_adapter(session, sim.url, token="right").send([msg(1, "+27821110001")])
    assert result.outcome is Outcome.ACCEPTED


async def test_zoomconnect_poll_and_balance(
    session: aiohttp.ClientSession,
    start_simulator: Any,
) -> None:
    sim = await start_simulator(settings(zoomconnect=FamilySettings(delivered=1.0)))
    zc = zc_adapter(session, sim.url)
    (sent,) = await zc.send([msg(42, "+27821110001")])
    assert sent.provider_message_id is not None
    (receipt,) = await zc.poll([sent.provider_message_id, "no-such-id"])
    assert receipt.status is MessageStatus.DELIVERED
    assert receipt.message_id == 42
    balance = await zc.balance()
    assert balance is not None
    assert balance == SimulatorSettings().credit_balance - 1


# --- faults --------------------------------------------------------------------------------------


async def test_rate_limited_is_retry_with_retry_after(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    family = FamilySettings(rate_limited=1.0, retry_after=3)
    sim = await start_simulator(settings(simulator=family, zoomconnect=family))
    for adapter in (sim_adapter(session, sim.url), zc_adapter(session, sim.url)):
        (result,) = await adapter.send([msg(1, "+27821110001")])
        assert result.outcome is Outcome.RETRY
        assert result.retry_after == 3
    assert sim.stats.rate_limited == 2
    assert sim.stats.per_number == {}


async def test_server_error_is_unknown(
    session: aiohttp.ClientSession,
    start_simulator: Any,
) -> None:
    sim = await start_simulator(settings(zoomconnect=FamilySettings(server_errors=1.0)))
    (result,) = await zc_adapter(session, sim.url).send([msg(1, "+27821110001")])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "500")


async def test_timeout_is_unknown_and_the_message_was_taken(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(simulator=FamilySettings(timeouts=1.0, hang=30)))
    adapter = sim_adapter(session, sim.url, timeout="300ms")
    (result,) = await adapter.send([msg(1, "+27821110001")])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "timeout")
    assert sim.stats.timeouts == 1
    assert sim.stats.per_number == {"+27821110001": 1}


async def test_connection_refused_is_retry(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (result,) = await zc_adapter(session, f"http://127.0.0.1:{port}").send([msg(1, "+27821110001")])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connect_error")


# --- receipts ------------------------------------------------------------------------------------


async def test_simulator_receipts_arrive_authenticated(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/sim", webhook_secret="hdr", delivered=1.0
    )
    sim = await start_simulator(settings(simulator=family))
    adapter = sim_adapter(session, sim.url, webhook_secret="hdr", bulk=True)
    receiver.adapters["sim"] = adapter
    results = await adapter.send([msg(1, "+27821110001"), msg(2, "+27821110002")])
    await receiver.wait_for(lambda: len(receiver.receipts("sim")) == 4)
    by_message = {(r.message_id, r.status) for r in receiver.receipts("sim")}
    assert by_message == {
        (n, s) for n in (1, 2) for s in (MessageStatus.SENT, MessageStatus.DELIVERED)
    }
    ids = {r.provider_message_id for r in receiver.receipts("sim")}
    assert ids == {r.provider_message_id for r in results}
    assert all(r.event_id and r.occurred_at for r in receiver.receipts("sim"))
    assert receiver.refused == 0
    assert receiver.content_types[0].startswith("application/json")


async def test_a_failure_after_acceptance_is_undelivered_with_its_code(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    """The simulator's ``failed`` receipt follows an accepted send: ``undelivered``, as for
    every provider, with the network's code kept (``failed`` is for refused sends)."""
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/sim",
        webhook_secret="hdr",
        delivered=0.0,
        undelivered=0.0,
    )
    sim = await start_simulator(settings(simulator=family))
    adapter = sim_adapter(session, sim.url, webhook_secret="hdr")
    receiver.adapters["sim"] = adapter
    [result] = await adapter.send([msg(1, "+27821110001")])
    assert result.outcome is Outcome.ACCEPTED
    await receiver.wait_for(lambda: len(receiver.receipts("sim")) == 2)
    final = [r for r in receiver.receipts("sim") if r.status is not MessageStatus.SENT]
    assert [(r.status, r.provider_status, r.error_code) for r in final] == [
        (MessageStatus.UNDELIVERED, "failed", "network_rejected")
    ]


async def test_zoomconnect_receipts_arrive_as_form_with_query_secret(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    # the older ?secret= form (the path form is tested in test_simulator_zoomconnect.py)
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/zc",
        webhook_secret="zc-secret",
        delivered=0.0,
        undelivered=1.0,
    )
    sim = await start_simulator(settings(zoomconnect=family))
    adapter = zc_adapter(session, sim.url)
    receiver.adapters["zc"] = adapter
    (sent,) = await adapter.send([msg(7, "+27821110001")])
    await receiver.wait_for(lambda: len(receiver.receipts("zc")) == 2)
    receipts = receiver.receipts("zc")
    assert {r.provider_status for r in receipts} <= {"SENT", "FAILED_REFUNDED", "FAILED"}
    assert {r.status for r in receipts} == {MessageStatus.SENT, MessageStatus.UNDELIVERED}
    assert {(r.message_id, r.provider_message_id) for r in receipts} == {
        (7, sent.provider_message_id)
    }
    assert receiver.content_types == ["application/x-www-form-urlencoded"] * 2
    await settled(sim)
    assert sim.stats.receipts_posted == 2


async def test_a_wrong_secret_is_refused_and_counted_dropped(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/sim", webhook_secret="bad", sent_receipts=False
    )
    sim = await start_simulator(settings(simulator=family).model_copy(update={"post_attempts": 2}))
    adapter = sim_adapter(session, sim.url, webhook_secret="good")
    receiver.adapters["sim"] = adapter
    await adapter.send([msg(1, "+27821110001")])
    await receiver.wait_for(lambda: receiver.refused == 2)
    await settled(sim)
    assert sim.stats.receipts_dropped == 1
    assert receiver.events == []


async def test_duplicate_out_of_order_and_early_receipts(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/sim",
        delivered=1.0,
        duplicates=1.0,
        out_of_order=1.0,
        early_receipts=1.0,
        receipt_delay=(0.05, 0.05),
    )
    sim = await start_simulator(settings(simulator=family))
    adapter = sim_adapter(session, sim.url)
    receiver.adapters["sim"] = adapter
    await adapter.send([msg(1, "+27821110001")])
    assert len(receiver.receipts("sim")) >= 1  # posted before the send call returned
    await receiver.wait_for(lambda: len(receiver.receipts("sim")) == 3)
    statuses = [r.status for r in receiver.receipts("sim")]
    assert statuses[0] is MessageStatus.DELIVERED  # the final status came first
    assert sorted(statuses) == sorted(
        [MessageStatus.DELIVERED, MessageStatus.DELIVERED, MessageStatus.SENT]
    )
    delivered = [
        r.event_id for r in receiver.receipts("sim") if r.status is MessageStatus.DELIVERED
    ]
    assert delivered[0] == delivered[1]  # a duplicate is the same event again


async def test_inbound_stop_reaches_the_webhook_as_an_opt_out(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(
            zoomconnect=FamilySettings(
                webhook_url=f"{receiver.url}/webhooks/zc", webhook_secret="zc-secret"
            )
        )
    )
    receiver.adapters["zc"] = zc_adapter(session, sim.url)
    async with session.post(
        f"{sim.url}/sim/inbound/zoomconnect", json={"from": "+27821110001", "text": "STOP"}
    ) as resp:
        assert resp.status == 202
    await receiver.wait_for(lambda: len(receiver.events) == 1)
    (_, events) = receiver.events[0]
    assert events.inbound[0].text == "STOP"
    assert events.opt_changes[0].phone == "+27821110001"
    assert events.opt_changes[0].opted_out


async def test_stats_endpoint(session: aiohttp.ClientSession, start_simulator: Any) -> None:
    sim = await start_simulator(settings())
    await sim_adapter(session, sim.url).send([msg(1, "+27821110001")])
    async with session.get(f"{sim.url}/sim/stats") as resp:
        data = await resp.json()
    assert data["accepted"] == 1
    assert data["per_number"] == {"+27821110001": 1}
    assert sim.app[STATS] is sim.stats


async def test_a_full_receipt_queue_makes_senders_wait_instead_of_dropping(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = FamilySettings(
        webhook_url=f"{receiver.url}/webhooks/sim", sent_receipts=False, receipt_delay=(0.05, 0.05)
    )
    sim = await start_simulator(
        settings(simulator=family).model_copy(update={"max_pending_receipts": 2})
    )
    adapter = sim_adapter(session, sim.url)
    receiver.adapters["sim"] = adapter
    for n in range(6):
        (result,) = await adapter.send([msg(n, f"+2782111000{n + 1}")])
        assert result.outcome is Outcome.ACCEPTED
        assert sim.app[SIMULATOR].poster.pending <= 2
    await settled(sim)
    assert (sim.stats.receipts_posted, sim.stats.receipts_dropped) == (6, 0)
    assert len(receiver.receipts("sim")) == 6
