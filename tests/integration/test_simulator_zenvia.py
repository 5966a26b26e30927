"""Zenvia against the strict simulator over real HTTP: what is resent and what never is,
the error shapes of the seed, and both cause shapes a status event may carry."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.zenvia import ZenviaAccount, ZenviaAdapter
from engine.simulator import FAMILIES, FamilySettings, SimulatorSettings
from engine.simulator.families.zenvia import ZenviaRoutes
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

TOKEN = "hKp94crjv9OF3UGrCpSXUJw1-UYHhRvLKNLt"  # the seed's example


def settings(**family: Any) -> SimulatorSettings:
    return SimulatorSettings(seed=7, families={"zenvia": FamilySettings(**family)})


def zenvia(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZenviaAdapter:
    account = ZenviaAccount.model_validate(
        {
            "type": "zenvia",
            "token": TOKEN,
            "sender": "acme",
            "base_url": url,
            "webhook_secret": "zen-secret",
            **extra,
        }
    )
    made = adapter_for("zen", account, session)
    assert isinstance(made, ZenviaAdapter)
    return made


def msg(n: int) -> Outbound:
    return Outbound(n, f"+55119999{n:05d}", f"message {n}")


async def test_500_internal_error_is_resent_and_taken_once(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(server_errors=1.0))
    adapter = zenvia(session, sim.url)
    (first,) = await adapter.send([msg(1)])
    assert (first.outcome, first.error_code) == (Outcome.RETRY, "INTERNAL_ERROR")
    sim.app[FAMILIES]["zenvia"].settings = FamilySettings()
    (second,) = await adapter.send([msg(1)])
    assert second.outcome is Outcome.ACCEPTED
    assert sim.stats.per_number == {"5511999900001": 1}


async def test_a_gateway_error_after_the_request_is_unknown_and_was_taken(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    """The message was taken: resending it would send it twice, so it is ``unknown``."""
    sim = await start_simulator(settings())
    routes = sim.app[FAMILIES]["zenvia"]
    assert isinstance(routes, ZenviaRoutes)
    routes.gateway_errors = 1.0
    results = [r for n in range(1, 6) for r in await zenvia(session, sim.url).send([msg(n)])]
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}
    assert {r.error_code for r in results} <= {"502", "503", "504"}
    assert sim.stats.accepted == 5


@pytest.mark.parametrize("base", ["", "/v2", "/v2/"])
async def test_base_url_with_or_without_v2_reaches_the_documented_path(
    session: aiohttp.ClientSession, start_simulator: Any, base: str
) -> None:
    sim = await start_simulator(settings())
    (result,) = await zenvia(session, sim.url + base).send([msg(1)])
    assert result.outcome is Outcome.ACCEPTED


async def test_the_simulator_answers_as_the_seeds_error_table(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(require_token=TOKEN))
    url = f"{sim.url}/v2/channels/sms/messages"
    body = {"from": "acme", "to": "5511999990001", "contents": [{"type": "text", "text": "hi"}]}
    cases = [
        (url, {}, body, 401, "AUTHENTICATION_ERROR", "No authorization token was found"),
        (url, {"X-API-TOKEN": TOKEN}, {**body, "to": ""}, 400, "VALIDATION_ERROR", None),
        (
            url,
            {"X-API-TOKEN": TOKEN},
            {"from": "acme", "to": "5511999990001"},
            400,
            "VALIDATION_ERROR",
            None,
        ),
        (
            f"{sim.url}/v2/channels/pigeon/messages",
            {"X-API-TOKEN": TOKEN},
            body,
            404,
            "NOT_FOUND",
            None,
        ),
        (
            f"{sim.url}/v2/channels/sms/message",
            {"X-API-TOKEN": TOKEN},
            body,
            404,
            "NOT_FOUND",
            "Not found",
        ),
    ]
    for where, headers, payload, status, code, text in cases:
        async with session.post(where, json=payload, headers=headers) as resp:
            assert resp.status == status, where
            error = await resp.json()
        assert error["code"] == code
        assert isinstance(error["details"], list)
        if text:
            assert error["message"] == text
    assert sim.stats.accepted == 0


async def test_both_cause_shapes_arrive_and_both_are_read(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    family = {
        "webhook_url": f"{receiver.url}/webhooks/zen",
        "webhook_secret": "zen-secret",
        "delivered": 0.0,
        "undelivered": 1.0,
        "sent_receipts": False,
    }
    sim = await start_simulator(settings(**family))
    receiver.adapters["zen"] = adapter = zenvia(session, sim.url)
    for n in range(1, 13):
        await adapter.send([msg(n)])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 12)
    shapes = {
        "causes" if "causes" in r.raw["messageStatus"] else "cause" for r in receiver.receipts()
    }
    assert shapes == {"causes", "cause"}  # the seed leaves it open: both are played
    assert {(r.status, r.error_code) for r in receiver.receipts()} == {
        (MessageStatus.UNDELIVERED, "005")
    }
