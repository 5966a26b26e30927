"""The Sunshine Conversations adapter against the strict simulator over real HTTP: the v2
flow (including the 409 "it exists" path), auth, errors, receipts, replies with and without
``source.client``, and ``engine providers subscribe``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from engine.cli import main
from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.sunshine import SunshineAccount, SunshineAdapter, app_jwt
from engine.simulator import FAMILIES, FamilySettings, SimulatorSettings
from engine.simulator.families.sunshine import SunshineRoutes
from engine.status import MessageStatus
from tests.integration.helpers import Receiver

APP = "5d8cff3cd55b040010928b5b"
SECRET = "2vErhBhv81FZ5YXbC5XElVcnoNSqz0XjhqSYII4AOT3GCA5UojDCT07Z9NG"


def settings(**family: Any) -> SimulatorSettings:
    return SimulatorSettings(
        seed=11, families={"sunshine": FamilySettings(**family)}, post_workers=1
    )


def sunco(session: aiohttp.ClientSession, url: str | None, **extra: Any) -> SunshineAdapter:
    data = {
        "type": "sunshine",
        "app_id": APP,
        "key_id": "app_67a0e949f0305f4a391e9d97",
        "key_secret": SECRET,
        "integration_id": "5e4af71a81966cfff3ef6550",
        "base_url": url,
        "webhook_secret": "s-secret",
        **extra,
    }
    account = SunshineAccount.model_validate({k: v for k, v in data.items() if v is not None})
    made = adapter_for("sunco", account, session)
    assert isinstance(made, SunshineAdapter)
    return made


def msg(n: int, to: str) -> Outbound:
    return Outbound(n, to, f"message {n}", None)


def routes(sim: Any) -> SunshineRoutes:
    found = sim.app[FAMILIES]["sunshine"]
    assert isinstance(found, SunshineRoutes)
    return found


async def test_send_and_receipts_arrive_as_v2_envelopes(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(
            webhook_url=f"{receiver.url}/webhooks/sunco", webhook_secret="s-secret", delivered=1.0
        )
    )
    adapter = sunco(session, sim.url)
    receiver.adapters["sunco"] = adapter
    (one,) = await adapter.send([msg(1, "+15145550001")])
    (two,) = await adapter.send([msg(2, "+15145550002")])
    (again,) = await adapter.send([msg(3, "+15145550001")])
    assert {one.outcome, two.outcome, again.outcome} == {Outcome.ACCEPTED}
    assert sim.stats.requests == 4 + 4 + 1  # user, conversation, client, message; then cached
    await receiver.wait_for(lambda: len(receiver.receipts()) == 6)
    ids = {one.provider_message_id, two.provider_message_id, again.provider_message_id}
    got = {(r.provider_message_id, r.status) for r in receiver.receipts()}
    assert got == {(p, s) for p in ids for s in (MessageStatus.SENT, MessageStatus.DELIVERED)}
    assert any(len(events.receipts) > 1 for _, events in receiver.events)  # several per call
    assert sim.stats.per_number == {"+15145550001": 2, "+15145550002": 1}


async def test_an_existing_user_is_reused_after_a_restart(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    """A second adapter (a restarted engine) meets 409 on the user and on the client, looks
    the user and its conversation up, and posts there."""
    sim = await start_simulator(settings())
    (first,) = await sunco(session, sim.url).send([msg(1, "+15145550001")])
    (second,) = await sunco(session, sim.url).send([msg(2, "+15145550001")])
    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    state = routes(sim)
    assert (len(state.users), len(state.conversations)) == (1, 1)
    assert [len(c) for c in state.clients.values()] == [1]
    assert sim.stats.bad_requests == 2  # the two 409s


async def test_failure_receipt_is_undelivered_with_the_code(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(
            webhook_url=f"{receiver.url}/webhooks/sunco",
            webhook_secret="s-secret",
            delivered=0.0,
            undelivered=0.5,
            sent_receipts=False,
        )
    )
    adapter = sunco(session, sim.url)
    receiver.adapters["sunco"] = adapter
    for n in range(6):
        await adapter.send([msg(n, f"+1514555000{n + 1}")])
    await receiver.wait_for(lambda: len(receiver.receipts()) == 6)
    assert {(r.status, r.provider_status) for r in receiver.receipts()} == {
        (MessageStatus.UNDELIVERED, "conversation:message:delivery:failure")
    }
    assert {r.error_code for r in receiver.receipts()} == {"undeliverable", "bad_request"}


async def test_a_wrong_webhook_secret_is_refused(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(
            webhook_url=f"{receiver.url}/webhooks/sunco",
            webhook_secret="other",
            sent_receipts=False,
        ).model_copy(update={"post_attempts": 1})
    )
    receiver.adapters["sunco"] = adapter = sunco(session, sim.url)
    await adapter.send([msg(1, "+15145550001")])
    await receiver.wait_for(lambda: receiver.refused == 1)
    assert receiver.events == []


@pytest.mark.parametrize(
    ("auth", "key_id"),
    [("basic", "app_1"), ("jwt", "app_1"), ("jwt", "act_5963ceb97cde542d000dbdb1")],
)
async def test_basic_and_jwt_auth_are_verified(
    session: aiohttp.ClientSession, start_simulator: Any, auth: str, key_id: str
) -> None:
    sim = await start_simulator(settings(require_token=SECRET))
    (ok,) = await sunco(session, sim.url, auth=auth, key_id=key_id).send([msg(1, "+15145550001")])
    assert ok.outcome is Outcome.ACCEPTED
    (wrong,) = await sunco(session, sim.url, auth=auth, key_id=key_id, key_secret="nope").send(
        [msg(2, "+15145550002")]
    )
    assert (wrong.outcome, wrong.error_code) == (Outcome.ACCOUNT, "unauthorized")
    forged = app_jwt("app_x", SECRET).rsplit(".", 1)[0] + ".AAAA"
    async with session.post(
        f"{sim.url}/v2/apps/{APP}/users",
        json={"externalId": "+1"},
        headers={"Authorization": f"Bearer {forged}"},
    ) as resp:
        assert resp.status == 401
        assert (await resp.json()) == {
            "errors": [{"code": "unauthorized", "title": "Authorization is required"}]
        }
    assert sim.stats.unauthorized == 2


async def test_the_zendesk_host_prefix(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    (result,) = await sunco(session, f"{sim.url}/sc").send([msg(1, "+15145550001")])
    assert result.outcome is Outcome.ACCEPTED


async def test_rejections_and_strict_validation(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings())
    adapter = sunco(session, sim.url)
    (blocked,) = await adapter.send([msg(1, "+15145550000")])
    assert (blocked.outcome, blocked.error_code) == (Outcome.REJECTED, "bad_request")
    (local,) = await adapter.send([msg(2, "5145550002")])  # refused at the client link
    assert (local.outcome, local.error_code, local.error_detail) == (
        Outcome.REJECTED,
        "bad_request",
        "matchCriteria.phoneNumber must be E.164",
    )
    v2, headers = f"{sim.url}/v2/apps/{APP}", adapter.auth_headers()
    conversation = adapter.conversations.get("+15145550000")
    for path, body, title in [
        ("/users", {"profile": {}}, "externalId is required"),
        (
            f"/conversations/{conversation}/messages",
            {"author": {"type": "user"}, "content": {"type": "text", "text": "x"}},
            "author.type must be business",
        ),
        (
            f"/conversations/{conversation}/messages",
            {
                "author": {"type": "business"},
                "content": {"type": "text", "text": "x"},
                "destination": {"integrationId": "another"},
            },
            "The user has no client for the destination",
        ),
    ]:
        async with session.post(v2 + path, json=body, headers=headers) as resp:
            assert resp.status == 400, path
            assert (await resp.json())["errors"][0]["title"] == title
    async with session.post(
        f"{sim.url}/v1.1/apps/{APP}/notifications", json={}, headers=headers
    ) as resp:
        assert resp.status == 404  # v1.1 is not the seed's API
    assert sim.stats.accepted == 0


async def test_429_is_retry_and_500_unknown_on_the_post(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(rate_limited=1.0, retry_after=2))
    (limited,) = await sunco(session, sim.url).send([msg(1, "+15145550001")])
    assert (limited.outcome, limited.retry_after, limited.error_code) == (Outcome.RETRY, 2, "429")
    sim = await start_simulator(settings(server_errors=1.0))
    (failed,) = await sunco(session, sim.url).send([msg(1, "+15145550001")])
    assert (failed.outcome, failed.error_code) == (Outcome.UNKNOWN, "500")


async def test_replies_with_and_without_a_client_reach_the_number(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    """The simulator picks per callback whether a reply carries source.client or only the
    author's user: every one resolves to the number."""
    sim = await start_simulator(
        settings(webhook_url=f"{receiver.url}/webhooks/sunco", webhook_secret="s-secret")
    )
    receiver.adapters["sunco"] = sunco(session, sim.url)
    phones = [f"+1514555000{n}" for n in range(1, 9)]
    for phone in phones:
        async with session.post(
            f"{sim.url}/sim/inbound/sunshine", json={"from": phone, "text": "STOP"}
        ) as resp:
            assert resp.status == 202
    await receiver.wait_for(lambda: sum(len(e.inbound) for _, e in receiver.events) == 8)
    replies = [i for _, events in receiver.events for i in events.inbound]
    assert sorted(i.from_ for i in replies) == phones
    changes = [o for _, events in receiver.events for o in events.opt_changes]
    assert sorted((o.phone, o.opted_out) for o in changes) == [(p, True) for p in phones]
    with_client = {"client" in i.raw["payload"]["message"]["source"] for i in replies}
    assert with_client == {True, False}  # both variants were played


async def test_providers_subscribe_creates_the_webhook(
    start_simulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = await start_simulator(settings(webhook_secret="made-secret"))
    config = tmp_path / "engine.yaml"
    config.write_text(
        orjson.dumps(
            {
                "webhooks": {"public_url": "https://engine.example.com"},
                "providers": {
                    "sunco": {
                        "type": "sunshine",
                        "app_id": APP,
                        "key_id": "app_1",
                        "key_secret": SECRET,
                        "integration_id": "i-sms",
                        "webhook_integration_id": "i-custom",
                        "base_url": sim.url,
                    }
                },
            }
        ).decode()
    )
    code = await asyncio.to_thread(
        main, ["--config", str(config), "providers", "subscribe", "sunco"]
    )
    out = capsys.readouterr().out
    assert code == 0
    first, _, rest = out.partition("\n")
    assert first == "https://engine.example.com/webhooks/sunco  (sunco: subscribed)"
    webhook = orjson.loads(rest)["webhook"]
    assert (webhook["target"], webhook["secret"], webhook["includeFullSource"]) == (
        "https://engine.example.com/webhooks/sunco",
        "made-secret",
        True,
    )
    assert "conversation:message:delivery:failure" in webhook["triggers"]
