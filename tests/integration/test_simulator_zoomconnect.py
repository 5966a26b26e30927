"""The ZoomConnect adapter against the strict simulator over real HTTP: callbacks in every
joining form (path secret and the older ``?secret=``), the failure vocabulary with the
FAILED_OPTOUT opt-out, replies linked by ``dataField``, strict routes, and ``engine providers
subscribe``.

The path-secret receiver here plays the webhook listener's contract for
``/webhooks/{account}/{secret}``: the secret segment is cut at its first ``&`` (ZoomConnect
may join its parameters with a bare ``&``), compared with the account's secret, and the
tail is handed to the adapter as query parameters.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from engine.cli import main
from engine.providers import adapter_for
from engine.providers.base import Outbound, Outcome
from engine.providers.zoomconnect import ZoomConnectAccount, ZoomConnectAdapter
from engine.receipt_writer import ReceiptWriter
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings
from engine.status import MessageStatus
from engine.webhooks import WebhookHandler
from tests.integration.helpers import Receiver, numbers

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zoomconnect"
API = "/api/rest/v1"
SECRET = "zc-secret-0123456789"


class PathReceiver(Receiver):
    """A Receiver that also takes ``/webhooks/{name}/{secret}`` and notes each call's form."""

    forms: list[str]

    async def handle_path(self, request: web.Request) -> web.Response:
        adapter = self.adapters[request.match_info["name"]]
        secret, glued, tail = request.match_info["secret"].partition("&")
        wanted = adapter.account.webhook_secret.get_secret_value()
        if not hmac.compare_digest(secret.encode(), wanted.encode()):
            self.refused += 1
            self.arrived.set()
            return web.Response(status=401)
        query = {**dict(parse_qsl(tail, keep_blank_values=True)), **request.query}
        body = await request.read()
        self.forms.append(
            "&"
            if glued
            else "?&"
            if request.query_string.startswith("&")
            else "?"
            if request.query_string
            else "form&"
            if body.startswith(b"&")
            else "form"
        )
        events = adapter.parse_webhook(request.headers.get("Content-Type", ""), body, query)
        self.events.append((request.match_info["name"], events))
        self.arrived.set()
        return web.Response(text="ok")


@pytest.fixture
async def path_receiver() -> AsyncIterator[PathReceiver]:
    found = PathReceiver()
    found.forms = []
    app = web.Application()
    app.router.add_post("/webhooks/{name}", found.handle)
    app.router.add_route("*", "/webhooks/{name}/{secret}", found.handle_path)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    found.url = f"http://{host}:{port}"
    yield found
    await runner.cleanup()


def settings(**family: Any) -> SimulatorSettings:
    return SimulatorSettings(seed=17, families={"zoomconnect": FamilySettings(**family)})


def zc(session: aiohttp.ClientSession, url: str, **extra: Any) -> ZoomConnectAdapter:
    account = ZoomConnectAccount.model_validate(
        {
            "type": "zoomconnect",
            "email": "ops@example.com",
            "token": "zc-token",
            "base_url": url,
            "webhook_secret": SECRET,
            "batch_size": 20,
            **extra,
        }
    )
    made = adapter_for("zc", account, session)
    assert isinstance(made, ZoomConnectAdapter)
    return made


async def send_all(adapter: ZoomConnectAdapter, phones: list[str]) -> list[str]:
    """Send one message per number in bulk batches; ZoomConnect's ids, in order."""
    ids: list[str] = []
    for start in range(0, len(phones), adapter.max_batch):
        chunk = phones[start : start + adapter.max_batch]
        results = await adapter.send(
            [Outbound(start + n + 1, p, f"hi {p}") for n, p in enumerate(chunk)]
        )
        assert all(r.outcome is Outcome.ACCEPTED for r in results), results
        ids += [r.provider_message_id or "" for r in results]
    return ids


async def settled(sim: RunningSimulator) -> None:
    async with asyncio.timeout(10):
        await sim.receipts_done()


async def test_callbacks_to_the_path_secret_url_in_every_joining_form(
    session: aiohttp.ClientSession, start_simulator: Any, path_receiver: PathReceiver
) -> None:
    url = zc(session, "http://unused").webhook_url(path_receiver.url)
    assert url == f"{path_receiver.url}/webhooks/zc/{SECRET}"
    sim = await start_simulator(settings(webhook_url=url, delivered=1.0))
    path_receiver.adapters["zc"] = adapter = zc(session, sim.url)
    phones = numbers(40, prefix="+2783")
    ids = await send_all(adapter, phones)
    await path_receiver.wait_for(lambda: len(path_receiver.receipts()) == 80, seconds=10)
    assert path_receiver.refused == 0
    assert set(path_receiver.forms) == {"?", "&", "?&", "form", "form&"}  # all were played
    final = {
        (r.provider_message_id, r.message_id)
        for r in path_receiver.receipts()
        if r.status is MessageStatus.DELIVERED
    }
    assert final == {(pid, n + 1) for n, pid in enumerate(ids)}
    assert not any(SECRET in orjson.dumps(r.raw).decode() for r in path_receiver.receipts())


async def test_the_older_query_secret_survives_every_joining_form(
    session: aiohttp.ClientSession, start_simulator: Any, receiver: Receiver
) -> None:
    sim = await start_simulator(
        settings(webhook_url=f"{receiver.url}/webhooks/zc", webhook_secret=SECRET, delivered=1.0)
    )
    receiver.adapters["zc"] = adapter = zc(session, sim.url)
    await send_all(adapter, numbers(20, prefix="+2784"))
    await receiver.wait_for(lambda: len(receiver.receipts()) == 40, seconds=10)
    assert receiver.refused == 0
    assert {r.status for r in receiver.receipts()} == {MessageStatus.SENT, MessageStatus.DELIVERED}
    glued = [q["secret"] for q in receiver.queries if q["secret"] != SECRET]
    assert glued  # ZoomConnect's "?" really was glued onto the secret, and was read anyway
    assert all("secret" not in r.raw for r in receiver.receipts())


async def test_failures_after_acceptance_are_undelivered_and_an_opt_out_suppresses(
    session: aiohttp.ClientSession, start_simulator: Any, path_receiver: PathReceiver
) -> None:
    url = f"{path_receiver.url}/webhooks/zc/{SECRET}"
    sim = await start_simulator(
        settings(webhook_url=url, delivered=0.0, undelivered=0.5, sent_receipts=False)
    )
    path_receiver.adapters["zc"] = adapter = zc(session, sim.url)
    phones = numbers(20, prefix="+2785")
    ids = await send_all(adapter, phones)
    await path_receiver.wait_for(lambda: len(path_receiver.receipts()) == 20, seconds=10)
    receipts = path_receiver.receipts()
    assert {r.status for r in receipts} == {MessageStatus.UNDELIVERED}
    assert {r.error_code for r in receipts} == {"FAILED", "FAILED_REFUNDED", "FAILED_OPTOUT"}
    assert all(r.error_code == r.provider_status for r in receipts)
    opted = {r.provider_message_id or "" for r in receipts if r.error_code == "FAILED_OPTOUT"}
    number_of = dict(zip(ids, phones, strict=True))
    assert sorted((o.phone, o.opted_out, o.channel) for o in path_receiver.opt_changes()) == (
        sorted((number_of[i], True, "sms") for i in opted)
    )


async def test_a_reply_names_the_message_it_answers(
    session: aiohttp.ClientSession, start_simulator: Any, path_receiver: PathReceiver
) -> None:
    url = f"{path_receiver.url}/webhooks/zc/{SECRET}"
    sim = await start_simulator(settings(webhook_url=url, sent_receipts=False, delivered=1.0))
    path_receiver.adapters["zc"] = adapter = zc(session, sim.url, bulk=False)
    (sent,) = await adapter.send([Outbound(42, "+27821230001", "Offer")])
    await path_receiver.wait_for(lambda: len(path_receiver.receipts()) == 1)
    async with session.post(
        f"{sim.url}/sim/inbound/zoomconnect", json={"from": "+27821230001", "text": "STOP"}
    ) as resp:
        assert resp.status == 202
    await path_receiver.wait_for(lambda: len(path_receiver.inbound()) == 1)
    (reply,) = path_receiver.inbound()
    assert (reply.from_, reply.text, reply.in_reply_to) == (
        "+27821230001",
        "STOP",
        sent.provider_message_id,
    )
    assert reply.raw["dataField"] == "42"
    assert [(o.phone, o.opted_out) for o in path_receiver.opt_changes()] == [("+27821230001", True)]


async def test_the_simulator_refuses_what_zoomconnect_would(
    session: aiohttp.ClientSession, start_simulator: Any
) -> None:
    sim = await start_simulator(settings(require_token="zc-token"))
    auth = {"email": "ops@example.com", "token": "zc-token"}
    seed_body = (FIXTURES / "send_request.txt").read_text().replace("“", '"').replace("”", '"')
    cases: list[tuple[str, str, dict[str, str], bytes, int, int]] = [
        ("POST", "/api/rest/v1/sms/sendd", auth, b"{}", 404, 404),
        ("POST", "/api/rest/v2/sms/send", auth, b"{}", 404, 0),  # not ZoomConnect at all
        ("POST", f"{API}/sms/send", {}, b"{}", 401, 401),
        ("POST", f"{API}/sms/send", {**auth, "token": "other"}, b"{}", 401, 401),
        ("POST", f"{API}/sms/send", {**auth, "Content-Type": "text/plain"}, b"{}", 415, 415),
        ("POST", f"{API}/sms/send", auth, b"[1]", 400, 1),
        ("POST", f"{API}/sms/send", auth, seed_body.encode(), 400, 2),  # the seed's example
        ("POST", f"{API}/sms/send", auth, b'{"recipientNumber": "27821234567"}', 400, 3),
        ("POST", f"{API}/sms/send-bulk", auth, b'{"sendSmsRequests": []}', 400, 1),
    ]
    for method, path, headers, body, status, code in cases:
        headers = {"Content-Type": "application/json", **headers}
        async with session.request(method, sim.url + path, data=body, headers=headers) as resp:
            assert resp.status == status, (path, headers, body)
            if code:
                dto = await resp.json()
                assert set(dto) == {"code", "status", "message", "developerMessage", "moreInfoUrl"}
                assert dto["code"] == code, (path, dto)
    async with session.get(f"{sim.url}{API}/sms/send", headers=auth) as resp:
        example = await resp.json()
    assert example == orjson.loads(seed_body)
    assert sim.stats.per_number == {}


async def test_subscribe_prints_the_path_secret_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text(
        orjson.dumps(
            {
                "webhooks": {"public_url": "https://engine.example.com"},
                "providers": {
                    "zc": {
                        "type": "zoomconnect",
                        "email": "ops@example.com",
                        "token": "t",
                        "webhook_secret": SECRET,
                    }
                },
            }
        ).decode()
    )
    code = await asyncio.to_thread(main, ["--config", str(config), "providers", "subscribe", "zc"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"https://engine.example.com/webhooks/zc/{SECRET}  (zc: ")
    assert "?secret=" not in out


async def test_an_opt_out_failure_lands_in_suppressions_through_the_webhook_listener(
    session: aiohttp.ClientSession,
    start_simulator: Any,
    pool: asyncpg.Pool,
    conn: asyncpg.Connection,
) -> None:
    """The engine's own listener and writer: FAILED_OPTOUT is stored ``undelivered`` with its
    word, and the number the adapter sent to is suppressed on the SMS channel."""
    writer = ReceiptWriter(pool)
    await writer.start()
    handler = WebhookHandler({}, writer)
    app = web.Application()
    app.add_routes(handler.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        sim = await start_simulator(
            settings(
                webhook_url=f"http://{host}:{port}/webhooks/zc",
                webhook_secret=SECRET,
                delivered=0.0,
                undelivered=0.0,
                sent_receipts=False,
            )
        )
        handler.adapters["zc"] = adapter = zc(session, sim.url)
        phones = numbers(3, prefix="+2786")
        await send_all(adapter, phones)
        await settled(sim)
    finally:
        await runner.cleanup()
        await writer.stop()
    rows = await conn.fetch("SELECT status::text, error_code FROM receipts")
    assert [tuple(r) for r in rows] == [("undelivered", "FAILED_OPTOUT")] * 3
    suppressed = await conn.fetch("SELECT phone, channel FROM suppressions ORDER BY phone")
    assert [tuple(r) for r in suppressed] == [(p, "sms") for p in sorted(phones)]
