"""The courier adapter against the strict simulator over real HTTP: status callbacks in both
shapes the seed leaves open (a JSON:API ``texts`` document, Twilio-style form fields; with
and without ``callback-json``), the failure vocabulary, replies through ``callback-url`` and
``expected-responses``, the polling fallback, and what the simulator refuses."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.courier import CourierAccount, CourierAdapter
from engine.simulator import FAMILIES, FamilySettings, RunningSimulator, SimulatorSettings
from engine.simulator.families.courier import CourierRoutes
from engine.status import MessageStatus
from tests.integration.helpers import Receiver, numbers

FIXTURES = Path(__file__).parents[1] / "fixtures" / "courier"
FORM = "application/x-www-form-urlencoded"


def settings(**family: Any) -> SimulatorSettings:
    return SimulatorSettings(seed=23, families={"courier": FamilySettings(**family)})


def courier(
    session: aiohttp.ClientSession, url: str, public_url: str | None, **extra: Any
) -> CourierAdapter:
    account = CourierAccount.model_validate(
        {
            "type": "courier",
            "token": "jwt",
            "account_id": "acc-1",
            "number_id": "num-1",
            "base_url": url,
            "webhook_secret": "cour-secret",
            **extra,
        }
    )
    made = adapter_for("cour", account, session, public_url=public_url)
    assert isinstance(made, CourierAdapter)
    return made


def msg(n: int, to: str) -> Outbound:
    return Outbound(n, to, f"message {n}")


def routes(sim: RunningSimulator) -> CourierRoutes:
    found = sim.app[FAMILIES]["courier"]
    assert isinstance(found, CourierRoutes)
    return found


async def settled(sim: RunningSimulator) -> None:
    async with asyncio.timeout(5):
        await sim.receipts_done()


def seed(name: str) -> Any:
    text = (FIXTURES / name).read_text()
    return orjson.loads(re.sub(r"(^|[\[{,]\s*)- ", r"\1", text, flags=re.M))


# --- status callbacks ---------------------------------------------------------------------------


async def test_both_callback_shapes_reach_each_texts_url_and_match(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(settings(delivered=1.0))  # no webhook_url: per-text URLs
    receiver.adapters["cour"] = adapter = courier(session, sim.url, public_url=receiver.url)
    phones = numbers(24, prefix="+1415")
    results = [(await adapter.send([msg(n, p)]))[0] for n, p in enumerate(phones, 1)]
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    await receiver.wait_for(lambda: len(receiver.receipts()) == 48)
    assert receiver.refused == 0
    final = {r.message_id for r in receiver.receipts() if r.status is MessageStatus.DELIVERED}
    assert final == set(range(1, 25))
    assert set(receiver.content_types) == {"application/json", FORM}  # both shapes played
    twilio = [r for r in receiver.receipts() if "MessageStatus" in r.raw]
    assert {"callback-json" in r.raw for r in twilio} == {True, False}  # with and without
    assert receiver.in_path == 48  # the secret came in the path (webhook_url's form)
    assert all("secret" not in q for q in receiver.queries)
    assert not any("cour-secret" in orjson.dumps(r.raw).decode() for r in receiver.receipts())


@pytest.mark.parametrize("fate", ["undelivered", "failed"])
async def test_failures_after_acceptance_are_undelivered_with_the_providers_code(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver, fate: str
) -> None:
    shares = {"undelivered": 1.0} if fate == "undelivered" else {"undelivered": 0.0}
    sim = await start_simulator(settings(delivered=0.0, sent_receipts=False, **shares))
    receiver.adapters["cour"] = adapter = courier(session, sim.url, public_url=receiver.url)
    for n, phone in enumerate(numbers(8, prefix="+1416"), 1):
        await adapter.send([msg(n, phone)])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 8)
    receipts = receiver.receipts()
    assert {r.status for r in receipts} == {MessageStatus.UNDELIVERED}
    assert {r.provider_status for r in receipts} == {fate}
    twilio_code = "30003" if fate == "undelivered" else "30005"
    assert {r.error_code for r in receipts} <= {fate, twilio_code}
    assert all(r.error_detail for r in receipts)


async def test_a_wrong_secret_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(sent_receipts=False).model_copy(update={"post_attempts": 1})
    )
    receiver.adapters["cour"] = courier(session, sim.url, public_url=receiver.url)
    wrong = courier(session, sim.url, public_url=receiver.url, webhook_secret="wrong")
    await wrong.send([msg(2, "+14155550102")])
    await settled(sim)
    assert (receiver.refused, sim.stats.receipts_dropped, receiver.events) == (1, 1, [])


async def test_without_a_callback_url_posts_nothing(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    (result,) = await courier(session, sim.url, public_url=None).send([msg(1, "+14155550101")])
    assert result.outcome is Outcome.ACCEPTED
    await settled(sim)
    assert (sim.stats.receipts_posted, sim.stats.receipts_dropped) == (0, 0)


# --- the polling fallback ------------------------------------------------------------------------


async def test_polling_finds_final_statuses_when_no_callback_came(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(delivered=1.0))
    adapter = courier(session, sim.url, public_url=None)  # no callbacks at all
    assert adapter.supports_polling
    several, once = "+14155550111", "+14155550122"
    sent = [
        (await adapter.send([msg(n, to)]))[0].provider_message_id
        for n, to in enumerate([several, several, several, once], 1)
    ]
    ids = [i for i in sent if i is not None]
    receipts = await adapter.poll(ids)
    assert sorted((r.provider_message_id or "", r.status) for r in receipts) == sorted(
        (i, MessageStatus.DELIVERED) for i in ids
    )
    assert routes(sim).lookups == {"list": 1, "one": 1}  # three to one number: one list
    # a fresh process remembers no numbers: one GET per text
    fresh = courier(session, sim.url, public_url=None)
    assert len(await fresh.poll(ids)) == 4
    assert routes(sim).lookups == {"list": 1, "one": 5}


async def test_polling_reads_an_undelivered_text(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(delivered=0.0, undelivered=1.0))
    adapter = courier(session, sim.url, public_url=None)
    (sent,) = await adapter.send([msg(1, "+14155550133")])
    assert sent.provider_message_id is not None
    (receipt,) = await adapter.poll([sent.provider_message_id, "unknown-text"])
    assert (receipt.status, receipt.error_code) == (MessageStatus.UNDELIVERED, "undelivered")
    assert receipt.error_detail == "Unreachable destination handset"


# --- replies ------------------------------------------------------------------------------


async def test_stop_and_start_replies_come_back_through_callback_url(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(
            sent_receipts=False,
            delivered=1.0,
            webhook_url=f"{receiver.url}/webhooks/cour",
            webhook_secret="cour-secret",
        )
    )
    receiver.adapters["cour"] = adapter = courier(session, sim.url, public_url=receiver.url)
    phones = numbers(6, prefix="+1417")
    for n, phone in enumerate(phones, 1):
        await adapter.send([msg(n, phone)])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 6)
    for n, phone in enumerate(phones):
        for text in ("STOP", "hello there") if n % 2 else ("START",):
            async with session.post(
                f"{sim.url}/sim/inbound/courier", json={"from": phone, "text": text}
            ) as resp:
                assert resp.status == 202
    await settled(sim)
    replies = receiver.inbound()
    assert sorted((r.from_, r.text) for r in replies) == sorted(
        (p, "STOP" if n % 2 else "START") for n, p in enumerate(phones)
    )  # not "hello there"
    assert sorted((o.phone, o.opted_out) for o in receiver.opt_changes()) == sorted(
        (p, bool(n % 2)) for n, p in enumerate(phones)
    )
    assert all(q.get("event") == "reply" for q in receiver.queries[6:])
    shapes = {"data" in r.raw for r in replies}
    assert shapes == {True, False}  # a text-receive-logs document and Twilio fields


# --- what the simulator refuses ------------------------------------------------------------------


async def test_rejections(session: aiohttp.ClientSession, start_simulator: Any) -> None:
    sim = await start_simulator(settings(require_token="jwt"))
    adapter = courier(session, sim.url, public_url=None)
    (blocked,) = await adapter.send([msg(1, "+14155550000")])
    assert (blocked.outcome, blocked.error_code) == (Outcome.REJECTED, "BlockedTarget")
    (bad,) = await adapter.send([msg(2, "0415 555 0101")])
    assert (bad.outcome, bad.error_code) == (Outcome.REJECTED, "InvalidPhoneNumber")
    (denied,) = await courier(session, sim.url, None, token="other").send([msg(3, "+14155550101")])
    assert (denied.outcome, denied.error_code) == (Outcome.ACCOUNT, "Unauthorized")
    assert sim.stats.per_number == {}


async def test_the_simulator_refuses_what_courier_would(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    sample = seed("create_text_request.txt")
    sample["data"]["attributes"]["target"] = "+14155550101"
    auth = {"Authorization": "Bearer x"}

    def attrs(**change: Any) -> dict[str, Any]:
        doc = orjson.loads(orjson.dumps(sample))
        doc["data"]["attributes"].update(change)
        return {k: v for k, v in doc["data"]["attributes"].items() if v is not None}

    def doc(attributes: dict[str, Any], kind: str = "texts") -> bytes:
        return orjson.dumps({"data": {"type": kind, "attributes": attributes}, "meta": {}})

    cases = [
        ("/v1/texts", auth, doc(attrs()), 404, "/v1/texts"),  # the seed's path ends in '/'
        ("/v1/texts/", {}, doc(attrs()), 401, ""),
        ("/v1/texts/", {**auth, "Content-Type": "text/plain"}, doc(attrs()), 415, ""),
        ("/v1/texts/", auth, doc(attrs(), "multicasts"), 400, "/data/type"),
        ("/v1/texts/", auth, doc(attrs(message=None)), 400, "/data/attributes/message"),
        (
            "/v1/texts/",
            auth,
            doc(attrs(**{"account-id": None})),
            400,
            "/data/attributes/account-id",
        ),
        (
            "/v1/texts/",
            auth,
            doc(attrs(**{"callback-json": "{}"})),
            400,
            "/data/attributes/callback-json",
        ),
        (
            "/v1/texts/",
            auth,
            doc(attrs(**{"expected-responses": "STOP"})),
            400,
            "/data/attributes/expected-responses",
        ),
        (
            "/v1/texts/",
            auth,
            doc(attrs(**{"callback-one-off": "yes"})),
            400,
            "/data/attributes/callback-one-off",
        ),
    ]
    for path, headers, body, status, pointer in cases:
        headers = {"Content-Type": "application/json", **headers}
        async with session.post(sim.url + path, data=body, headers=headers) as resp:
            assert resp.status == status, (path, body)
            (error,) = (await resp.json())["errors"]
        assert set(error) == {"code", "detail", "meta", "source", "status"}
        assert error["status"] == status
        if pointer.startswith("/data"):
            assert error["source"] == {"pointer": pointer}
    async with session.post(
        f"{sim.url}/v1/texts/",
        data=doc(attrs()),
        headers={"Content-Type": "application/json", **auth},
    ) as resp:
        assert resp.status == 201  # the seed's own sample, with a real number
        created = await resp.json()
    assert set(created["data"]["attributes"]) == set(
        seed("create_text_response.txt")["data"]["attributes"]
    )
    async with session.get(f"{sim.url}/v1/texts/", headers=auth) as resp:
        assert resp.status == 400
        (error,) = (await resp.json())["errors"]
    assert error["source"] == {"parameter": "account-id"}


@pytest.mark.parametrize(
    ("fault", "outcome", "code"),
    [
        ({"rate_limited": 1.0, "retry_after": 2}, Outcome.RETRY, "429"),
        ({"server_errors": 1.0}, Outcome.UNKNOWN, "500"),
        ({"timeouts": 1.0, "hang": 30}, Outcome.UNKNOWN, "timeout"),
    ],
    ids=["429", "500", "timeout"],
)
async def test_faults(
    session: aiohttp.ClientSession,
    start_simulator: Any,
    fault: dict[str, Any],
    outcome: Outcome,
    code: str,
) -> None:
    sim = await start_simulator(settings(**fault))
    adapter = courier(session, sim.url, public_url=None, timeout="300ms")
    (result,) = await adapter.send([msg(1, "+14155550101")])
    assert (result.outcome, result.error_code) == (outcome, code)
    if "retry_after" in fault:
        assert result.retry_after == 2
