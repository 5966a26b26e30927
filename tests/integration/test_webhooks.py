"""The webhook endpoint over real HTTP, storing into a real PostgreSQL.

Payloads are the documented shapes the adapters' unit tests were recorded from (the seeds
and providers.md): each provider's receipts land in ``receipts``; a bad secret, a body we
cannot read or an unknown account change nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from engine.config import EngineConfig
from engine.errors import ConfigError
from engine.providers import adapter_for
from engine.providers.base import Adapter, Receipt, WebhookEvents
from engine.receipt_writer import ReceiptWriter
from engine.status import MessageStatus
from engine.webhooks import WebhookHandler, listener_logger

SECRET = "s3cret"
SUNCO_SECRET = "8564b3e6a8b20a4bdb68b05ce9bc5936"

ACCOUNTS: dict[str, dict[str, Any]] = {
    "sim": {"type": "simulator", "webhook_secret": SECRET},
    "sim-open": {"type": "simulator"},
    "zc": {
        "type": "zoomconnect",
        "email": "ops@example.com",
        "token": "t",
        "webhook_secret": SECRET,
    },
    "zc-open": {"type": "zoomconnect", "email": "ops@example.com", "token": "t"},
    "zenvia": {"type": "zenvia", "token": "t", "sender": "acme", "webhook_secret": SECRET},
    "zingle": {
        "type": "zingle",
        "username": "u",
        "password": "p",
        "service_id": "svc",
        "channel_type_id": "ct",
        "webhook_secret": SECRET,
    },
    "sunco": {
        "type": "sunshine",
        "app_id": "5d8cff3cd55b040010928b5b",
        "key_id": "app_1",
        "key_secret": "k",
        "integration_id": "5e4af71a81966cfff3ef6550",
        "webhook_secret": SUNCO_SECRET,
    },
    "courier": {
        "type": "courier",
        "token": "t",
        "account_id": "a",
        "number_id": "n",
        "webhook_secret": SECRET,
    },
}


@dataclass
class WebhookServer:
    """A running webhook app: its URL, writer and handler."""

    url: str
    writer: ReceiptWriter
    handler: WebhookHandler
    session: aiohttp.ClientSession

    async def post(
        self,
        account: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> int:
        """POST to /webhooks/{account}; the HTTP status."""
        data = body if isinstance(body, bytes | str) or body is None else orjson.dumps(body)
        sent = {"Content-Type": content_type, **(headers or {})}
        async with self.session.post(
            f"{self.url}/webhooks/{account}", data=data, params=query, headers=sent
        ) as resp:
            await resp.read()
            return resp.status


def adapters_for(config: EngineConfig, session: aiohttp.ClientSession) -> dict[str, Adapter[Any]]:
    return {name: adapter_for(name, account, session) for name, account in config.providers.items()}


async def serve_webhooks(
    pool: asyncpg.Pool,
    adapters: dict[str, Adapter[Any]],
    session: aiohttp.ClientSession,
    **writer: Any,
) -> tuple[WebhookServer, web.AppRunner]:
    """Start a writer and the webhook app on 127.0.0.1 (a free port)."""
    receipt_writer = ReceiptWriter(pool, **writer)
    await receipt_writer.start()
    handler = WebhookHandler(adapters, receipt_writer, open_accounts={"sim-open"})
    app = web.Application()
    app.add_routes(handler.routes())
    runner = web.AppRunner(app, access_log=None, logger=listener_logger())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return WebhookServer(f"http://{host}:{port}", receipt_writer, handler, session), runner


@pytest.fixture
async def server(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> AsyncIterator[WebhookServer]:
    config = EngineConfig.model_validate({"providers": ACCOUNTS})
    running, runner = await serve_webhooks(pool, adapters_for(config, session), session)
    yield running
    await runner.cleanup()
    await running.writer.stop()


async def receipts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT account, provider_message_id, message_id, provider_event_id, status::text,"
        " provider_status, error_code, error_detail, occurred_at, raw, source, applied_at"
        " FROM receipts ORDER BY id"
    )
    return rows


# --- the documented payloads ---------------------------------------------------------------


def zenvia_status(
    code: str = "DELIVERED", event_id: str = "evt-1", **status: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": "2020-04-19T20:13:45.000Z",
        "subscriptionId": "sub-1",
        "type": "MESSAGE_STATUS",
        "channel": "sms",
        "messageId": "m-1",
        "contentIndex": 0,
        "message": {
            "id": "m-1",
            "externalId": "42",
            "contentIndex": 0,
            "direction": "OUT",
            "from": "acme",
            "to": "5511999999999",
        },
        "messageStatus": {
            "timestamp": "2020-04-19T20:13:44.000Z",
            "code": code,
            "description": code.lower(),
            "channel": "sms",
            "direction": "OUT",
            **status,
        },
    }


def zenvia_message(text: str, event_id: str = "evt-9", message_id: str = "in-1") -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": "2020-04-19T20:20:00.000Z",
        "type": "MESSAGE",
        "subscriptionId": "sub-2",
        "channel": "sms",
        "direction": "IN",
        "message": {
            "id": message_id,
            "from": "5511999999999",
            "to": "acme",
            "direction": "IN",
            "channel": "sms",
            "contents": [{"type": "text", "text": text}],
            "timestamp": "2020-04-19T20:20:00.000Z",
        },
    }


def sunco_envelope(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "app": {"id": "5d8cff3cd55b040010928b5b"},
        "webhook": {"id": "5e554d2cac66fb73a3c01871", "version": "v2"},
        "events": list(events),
    }


def sunco_delivery(
    kind: str,
    event_id: str = "61290a62c64b3af1ff868714",
    message_id: str = "5f748c1a2b5315fc007e7977",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": f"conversation:message:delivery:{kind}",
        "payload": {
            "user": {"id": "6a2343df57be6fe0f98efc33"},
            "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
            "message": {"id": message_id},
            "destination": {"type": "twilio", "integrationId": "5e4af71a81966cfff3ef6550"},
            "externalMessages": [{"id": "SM123"}],
            "isFinalEvent": kind != "channel",
            **extra,
        },
    }


def sunco_reply(text: str) -> dict[str, Any]:
    client = {
        "id": "61290a4f7821c3f206d690a3",
        "type": "twilio",
        "status": "active",
        "integrationId": "5e4af71a81966cfff3ef6550",
        "externalId": "+15145555555",
        "displayName": "+1 514-555-5555",
    }
    return {
        "id": "evt-in-1",
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": "conversation:message",
        "payload": {
            "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
            "message": {
                "id": "5f40256af057d0000dda9bd7",
                "received": "2021-08-27T15:53:06Z",
                "author": {"type": "user", "userId": "u1"},
                "content": {"type": "text", "text": text},
                "source": {
                    "type": "twilio",
                    "integrationId": "5e4af71a81966cfff3ef6550",
                    "client": client,
                },
            },
        },
    }


ZINGLE_BLOCK = {
    "action": "block",
    "direction": "outbound",
    "service_id": "fbb44d67-7437-464d-b249-17e9f918dc8e",
    "service_name": "Foo Hotel",
    "contact_id": "f6882aa2-afaf-4230-ae0a-cde79e78afb4",
    "contact_external_id": "9879a777",
    "contact_phone": "+14065551212",
    "service_phone": "+17605558585",
    "is_auto_blocked": True,
}

TEXT_ID = "44444444-4444-4444-4444-444444444444"


def courier_callback(status: str = "delivered", **attributes: Any) -> dict[str, Any]:
    return {
        "data": {
            "attributes": {
                "callback-status-url": "https://engine.example.com/webhooks/courier?secret="
                + SECRET,
                "callback-url": None,
                "created-at": "2024-05-01T10:00:00Z",
                "created-by": "a",
                "error": None,
                "from": "+14155550199",
                "last-modified-at": "2024-05-01T10:00:05Z",
                "message": "Hello",
                "status": status,
                "target": "+14155550100",
                "twilio-sid": None,
                "callback-json": {"message_id": 42},
                **attributes,
            },
            "id": TEXT_ID,
            "type": "texts",
        },
        "meta": {},
    }


def sim_events(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


def sim_status(
    status: str = "delivered",
    event_id: str = "evt-1",
    message_id: str = "sim-1",
    reference: str | None = "42",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "message_id": message_id,
        "reference": reference,
        "status": status,
        "code": None,
        "detail": None,
        "at": "2026-01-01T10:00:00+00:00",
        **extra,
    }


HEADER = {"X-Webhook-Secret": SECRET}
QUERY = {"secret": SECRET}

# account, body, query, headers, content type -> (provider id, our id, event id, status,
# provider status, error code)
CASES = {
    "simulator": (
        "sim",
        sim_events(sim_status()),
        None,
        HEADER,
        "application/json",
        ("sim-1", 42, "evt-1", "delivered", "delivered", None),
    ),
    "zoomconnect-query": (
        "zc",
        b"",
        {**QUERY, "status": "DELIVERED", "messageId": "40124213"},
        None,
        "",
        ("40124213", None, None, "delivered", "DELIVERED", None),
    ),
    "zoomconnect-form": (
        "zc",
        b"messageId=40124213&status=FAILED_REFUNDED&dataField=42",
        QUERY,
        None,
        "application/x-www-form-urlencoded",
        ("40124213", 42, None, "undelivered", "FAILED_REFUNDED", "FAILED_REFUNDED"),
    ),
    "zenvia": (
        "zenvia",
        zenvia_status(
            "NOT_DELIVERED",
            causes=[
                {"channelErrorCode": "005", "reason": "ABSENT_SUBSCRIBER", "details": "Unreachable"}
            ],
        ),
        None,
        HEADER,
        "application/json",
        ("m-1", 42, "evt-1", "undelivered", "NOT_DELIVERED", "005"),
    ),
    "sunshine": (
        "sunco",
        sunco_envelope(sunco_delivery("user")),
        None,
        {"X-API-Key": SUNCO_SECRET},
        "application/json",
        (
            "5f748c1a2b5315fc007e7977",
            None,
            "61290a62c64b3af1ff868714",
            "delivered",
            "conversation:message:delivery:user",
            None,
        ),
    ),
    "courier": (
        "courier",
        courier_callback("undelivered", error="Unreachable"),
        QUERY,
        None,
        "application/json",
        (TEXT_ID, 42, None, "undelivered", "undelivered", "undelivered"),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_documented_receipts_are_stored(
    server: WebhookServer, conn: asyncpg.Connection, case: str
) -> None:
    account, body, query, headers, ctype, expected = CASES[case]
    assert await server.post(account, body, query=query, headers=headers, content_type=ctype) == 200
    (row,) = await receipts(conn)
    assert row["account"] == account
    assert (
        row["provider_message_id"],
        row["message_id"],
        row["provider_event_id"],
        row["status"],
        row["provider_status"],
        row["error_code"],
    ) == expected
    assert row["source"] == "webhook"
    assert row["applied_at"] is None  # stored now, applied by the reconciler
    assert "secret" not in row["raw"]  # the query secret is never kept


async def test_sunshine_envelope_with_several_events(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    body = sunco_envelope(
        sunco_delivery("channel", "e1"),
        sunco_delivery("user", "e2"),
        sunco_delivery("failure", "e3", error={"code": "bad", "message": "x"}),
    )
    assert await server.post("sunco", body, headers={"X-API-Key": SUNCO_SECRET}) == 200
    assert [r["status"] for r in await receipts(conn)] == ["sent", "delivered", "undelivered"]


async def test_unknown_status_is_stored_unmapped(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    assert await server.post("zenvia", zenvia_status("TELEPORTED"), headers=HEADER) == 200
    (row,) = await receipts(conn)
    assert (row["status"], row["provider_status"]) == (None, "TELEPORTED")


@pytest.mark.parametrize(
    ("account", "body", "query", "headers"),
    [
        ("sim", sim_events(sim_status()), None, {"X-Webhook-Secret": "wrong"}),
        ("sim", sim_events(sim_status()), None, None),
        ("zc", b"", {"secret": "wrong", "status": "DELIVERED", "messageId": "1"}, None),
        ("zc", b"", {"status": "DELIVERED", "messageId": "1"}, HEADER),  # header: wrong place
        ("zenvia", zenvia_status(), None, {"X-Webhook-Secret": SECRET + "x"}),
        ("zingle", ZINGLE_BLOCK, None, None),
        ("sunco", sunco_envelope(sunco_delivery("user")), None, HEADER),
        ("courier", courier_callback(), {"secret": ""}, None),
        # no webhook_secret configured: a real provider's endpoint is never open
        ("zc-open", b"", {"status": "DELIVERED", "messageId": "1"}, None),
    ],
    ids=[
        "sim-wrong",
        "sim-missing",
        "zc-wrong",
        "zc-in-header",
        "zenvia-wrong",
        "zingle-missing",
        "sunco-wrong-header",
        "courier-empty",
        "zc-no-secret-configured",
    ],
)
async def test_bad_or_missing_secret_is_401_and_stores_nothing(
    server: WebhookServer,
    conn: asyncpg.Connection,
    account: str,
    body: Any,
    query: dict[str, str] | None,
    headers: dict[str, str] | None,
) -> None:
    ctype = "" if isinstance(body, bytes) else "application/json"
    assert await server.post(account, body, query=query, headers=headers, content_type=ctype) == 401
    assert await receipts(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    assert server.handler.stats.unauthorized == 1


async def test_simulator_account_without_secret_is_open(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    assert await server.post("sim-open", sim_events(sim_status())) == 200
    assert len(await receipts(conn)) == 1


@pytest.mark.parametrize(
    ("account", "body", "headers", "ctype"),
    [
        ("sim", b"{not json", HEADER, "application/json"),
        ("sim", {"events": "nope"}, HEADER, "application/json"),
        ("sim", sim_events({"id": "e", "message_id": "x"}), HEADER, "application/json"),
        ("zenvia", {"type": "MESSAGE_STATUS", "message": {}}, HEADER, "application/json"),
        ("zenvia", b"\xff\xfe", HEADER, "application/x-www-form-urlencoded"),
        ("zingle", {**ZINGLE_BLOCK, "action": "explode"}, HEADER, "application/json"),
        ("sunco", b"<xml/>", {"X-API-Key": SUNCO_SECRET}, "text/xml"),
        ("courier", {"data": {"type": "texts", "attributes": {}}}, None, "application/json"),
    ],
    ids=[
        "not-json",
        "events-not-list",
        "no-status",
        "zenvia-no-code",
        "undecodable-form",
        "zingle-action",
        "xml",
        "courier-no-status",
    ],
)
async def test_malformed_is_400_and_stores_nothing(
    server: WebhookServer,
    conn: asyncpg.Connection,
    account: str,
    body: Any,
    headers: dict[str, str] | None,
    ctype: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    query = QUERY if account == "courier" else None
    assert await server.post(account, body, query=query, headers=headers, content_type=ctype) == 400
    assert await receipts(conn) == []
    assert server.handler.stats.malformed == 1
    assert "malformed webhook" in caplog.text


async def test_unknown_account_is_404(server: WebhookServer, conn: asyncpg.Connection) -> None:
    assert await server.post("nobody", sim_events(sim_status()), headers=HEADER) == 404
    assert await receipts(conn) == []
    assert server.handler.stats.unknown_account == 1


async def test_duplicate_event_is_stored_once(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    for _ in range(3):
        assert await server.post("zenvia", zenvia_status(), headers=HEADER) == 200
    # and at once, in one group-committed batch
    results = await asyncio.gather(
        *(
            server.post(
                "sunco", sunco_envelope(sunco_delivery("user")), headers={"X-API-Key": SUNCO_SECRET}
            )
            for _ in range(5)
        )
    )
    assert results == [200] * 5
    assert [r["account"] for r in await receipts(conn)] == ["zenvia", "sunco"]
    assert server.writer.stats.duplicates == 6


async def test_stop_reply_suppresses_the_sender(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    assert await server.post("zenvia", zenvia_message("Stop"), headers=HEADER) == 200
    row = await conn.fetchrow(
        "SELECT channel, source FROM suppressions WHERE phone = $1", "+5511999999999"
    )
    assert dict(row) == {"channel": "sms", "source": "sms-reply:zenvia"}
    reply = await conn.fetchrow("SELECT phone, body, action FROM inbound_messages")
    assert dict(reply) == {"phone": "+5511999999999", "body": "Stop", "action": "opt_out"}


async def test_zingle_block_and_unblock_webhook(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    assert await server.post("zingle", ZINGLE_BLOCK, headers=HEADER) == 200
    source = await conn.fetchval("SELECT source FROM suppressions WHERE phone = '+14065551212'")
    assert source == "webhook:zingle"
    unblock = {**ZINGLE_BLOCK, "action": "unblock"}
    assert await server.post("zingle", unblock, headers=HEADER) == 200
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages WHERE body IS NULL") == 2


async def test_sunshine_stop_reply(server: WebhookServer, conn: asyncpg.Connection) -> None:
    body = sunco_envelope(sunco_reply("STOP"))
    assert await server.post("sunco", body, headers={"X-API-Key": SUNCO_SECRET}) == 200
    assert (
        await conn.fetchval("SELECT source FROM suppressions WHERE phone = '+15145555555'")
        == "sms-reply:sunco"
    )


async def test_bad_values_in_one_call_do_not_fail_the_others(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    poison = sim_events(
        sim_status(event_id="p1", reference="9" * 40, detail="a\x00b", extra={"nul": "\x00"}),
        sim_status(event_id="p2", message_id="x\x00y"),
    )
    calls = [
        server.post("sim", sim_events(sim_status(event_id=f"ok{i}")), headers=HEADER)
        for i in range(20)
    ]
    calls.append(server.post("sim", poison, headers=HEADER))
    assert await asyncio.gather(*calls) == [200] * 21
    rows = await receipts(conn)
    assert len(rows) == 22
    p1 = next(r for r in rows if r["provider_event_id"] == "p1")
    assert p1["message_id"] is None  # out of bigint range: kept in raw only
    assert p1["error_detail"] == "a\ufffdb"


async def test_concurrent_calls_share_commits_and_answer_fast(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    async def one(i: int) -> float:
        started = time.perf_counter()
        status = await server.post("sim", sim_events(sim_status(event_id=f"e{i}")), headers=HEADER)
        assert status == 200
        return time.perf_counter() - started

    took = await asyncio.gather(*(one(i) for i in range(300)))
    assert await conn.fetchval("SELECT count(*) FROM receipts") == 300
    assert server.writer.stats.flushes < 150  # group commit: many calls per INSERT
    assert max(took) < 1.0


async def test_a_slow_commit_is_answered_503_and_the_retry_deduplicated(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, conn: asyncpg.Connection
) -> None:
    config = EngineConfig.model_validate({"providers": ACCOUNTS})
    running, runner = await serve_webhooks(
        pool, adapters_for(config, session), session, flush_interval=0.5
    )
    running.handler.answer_within = 0.05
    try:
        assert await running.post("sim", sim_events(sim_status()), headers=HEADER) == 503
        running.handler.answer_within = 4.0
        # the provider retries; the first call's events were written meanwhile
        assert await running.post("sim", sim_events(sim_status()), headers=HEADER) == 200
    finally:
        await runner.cleanup()
        await running.writer.stop()
    assert len(await receipts(conn)) == 1
    assert running.handler.stats.calls["sim", "failed"] == 1


async def test_stopped_writer_answers_503(server: WebhookServer, conn: asyncpg.Connection) -> None:
    await server.writer.stop()
    assert await server.post("sim", sim_events(sim_status()), headers=HEADER) == 503
    assert await receipts(conn) == []


async def test_one_call_that_breaks_a_batch_fails_alone(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    flushed: list[int] = []
    writer = ReceiptWriter(pool, flush_interval=0.05, on_flush=flushed.append)
    await writer.start()

    def events(event_id: str, detail: str | None = None) -> WebhookEvents:
        return WebhookEvents(
            receipts=(
                Receipt(
                    "p1", None, MessageStatus.SENT, "sent", error_detail=detail, event_id=event_id
                ),
            )
        )

    try:
        calls = [writer.write("sim", events(f"g{i}")) for i in range(5)]
        calls.append(writer.write("sim", events("bad", "\ud800")))  # PostgreSQL refuses it
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await writer.stop()
    assert results[:5] == [None] * 5
    assert isinstance(results[5], asyncpg.DataError)
    assert sorted(r["provider_event_id"] for r in await receipts(conn)) == [
        f"g{i}" for i in range(5)
    ]
    assert sum(flushed) == 5


# --- hostile input ------------------------------------------------------------------------


async def raw_status(url: str, request: bytes) -> int:
    """The status of one request written byte for byte (headers aiohttp would not send)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("account", "header"),
    [
        ("sim", b"X-Webhook-Secret"),
        ("zenvia", b"X-Webhook-Secret"),
        ("zingle", b"Authorization"),
        ("zingle", b"X-Webhook-Secret"),
        ("sunco", b"X-API-Key"),
    ],
)
async def test_a_secret_header_that_is_not_utf8_is_401(
    server: WebhookServer,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    account: str,
    header: bytes,
) -> None:
    body = orjson.dumps(sim_events(sim_status()))
    request = (
        b"POST /webhooks/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"%s: \xff\xfe\xc3(\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (account.encode(), header, len(body), body)
    )
    assert await raw_status(server.url, request) == 401
    assert await receipts(conn) == []
    assert "Traceback" not in caplog.text


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_json_nested_too_deep_to_store_is_400_not_503(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    """Providers retry a 5xx for ever: a payload that can never be stored gets a 400."""
    body = json.dumps(sim_events(sim_status(extra=nested(260))))  # orjson would refuse it
    assert await server.post("sim", body, headers=HEADER) == 400
    assert await receipts(conn) == []
    assert server.handler.stats.malformed == 1
    # the next call is not held up by it
    assert await server.post("sim", sim_events(sim_status()), headers=HEADER) == 200


async def test_an_id_too_long_to_index_is_400_not_503(
    server: WebhookServer, conn: asyncpg.Connection
) -> None:
    huge = os.urandom(4000).hex()  # incompressible: past a btree entry's 2.7 kB
    assert await server.post("sim", sim_events(sim_status(message_id=huge)), headers=HEADER) == 400
    assert await server.post("sim", sim_events(sim_status(event_id=huge)), headers=HEADER) == 400
    assert await receipts(conn) == []


async def test_a_simulator_account_without_a_secret_is_a_config_error(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """Only ``engine demo`` and tests may open one (by naming it in ``open_accounts``)."""
    config = EngineConfig.model_validate({"providers": {"sim": {"type": "simulator"}}})
    writer = ReceiptWriter(pool)
    with pytest.raises(ConfigError, match=r"^providers\.sim\.webhook_secret: "):
        WebhookHandler(adapters_for(config, session), writer)
    WebhookHandler(adapters_for(config, session), writer, open_accounts={"sim"})
