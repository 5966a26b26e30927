"""``/webhooks/{account}/{secret}`` for every provider, the access log without the secret,
refused calls stored as rejected, Sunshine's mixed envelope, and the opt-out rule across a
restart: over real HTTP, into a real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from yarl import URL

from engine.config import EngineConfig
from engine.logs import TextFormatter
from engine.receipt_writer import ReceiptWriter
from engine.reconciler import Reconciler
from engine.redact import Redactor
from engine.webhooks import WebhookHandler, listener_logger
from tests.integration.test_receipts import make_run
from tests.integration.test_webhooks import (
    ACCOUNTS,
    CASES,
    HEADER,
    SECRET,
    SUNCO_SECRET,
    WebhookServer,
    adapters_for,
    receipts,
    serve_webhooks,
    server,  # noqa: F401 (a fixture)
    sim_events,
    sim_status,
    sunco_delivery,
    sunco_envelope,
    sunco_reply,
)

LONG = "path-secret-0123456789&/%"  # long enough to be masked; & / % must be encoded


async def call(
    running: WebhookServer,
    path: str,
    body: Any = b"",
    *,
    method: str = "POST",
    content_type: str = "",
    headers: dict[str, str] | None = None,
) -> int:
    """Call ``path`` exactly as written (no re-encoding); the HTTP status."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Content-Type": content_type, **(headers or {})} if content_type else headers
    url = URL(running.url + path, encoded=True)
    async with running.session.request(method, url, data=data, headers=sent) as resp:
        await resp.read()
        return resp.status


def secret_of(account: str) -> str:
    return SUNCO_SECRET if account == "sunco" else SECRET


# --- the path form, for every provider -----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_the_secret_in_the_path_works_for_every_provider(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
    case: str,
) -> None:
    account, body, query, _, ctype, expected = CASES[case]
    params = {k: v for k, v in (query or {}).items() if k != "secret"}
    path = f"/webhooks/{account}/{secret_of(account)}"
    if params:
        path += "?" + urlencode(params)
    assert await call(server, path, body, content_type=ctype) == 200  # no header, no ?secret=
    (row,) = await receipts(conn)
    assert (
        row["account"],
        row["provider_message_id"],
        row["message_id"],
        row["provider_event_id"],
        row["status"],
        row["provider_status"],
        row["error_code"],
    ) == (account, *expected)
    assert secret_of(account) not in orjson.dumps(row["raw"]).decode()


ZC_REPORT = "status=DELIVERED&messageId=40124213&dataField=42"


@pytest.mark.parametrize(
    "tail",
    [
        f"?{ZC_REPORT}",
        f"&{ZC_REPORT}",
        f"?&{ZC_REPORT}",
        "?%20&status=DELIVERED%20&messageId=40124213%20&dataField=42",  # the seed's spaces
        "%20&status=DELIVERED%20&messageId=40124213&dataField=42",
    ],
    ids=["?", "&", "?&", "?-spaced", "&-spaced"],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_zoomconnect_joins_its_query_to_the_path_in_any_form(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
    tail: str,
    method: str,
) -> None:
    assert await call(server, f"/webhooks/zc/{SECRET}{tail}", method=method) == 200
    (row,) = await receipts(conn)
    assert (row["provider_message_id"], row["message_id"], row["status"]) == (
        "40124213",
        42,
        "delivered",
    )
    assert SECRET not in orjson.dumps(row["raw"]).decode()


async def test_zoomconnect_form_fields_to_the_path_url(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
) -> None:
    assert (
        await call(
            server,
            f"/webhooks/zc/{SECRET}",
            f"&{ZC_REPORT}".encode(),
            content_type="application/x-www-form-urlencoded",
        )
        == 200
    )
    assert [r["status"] for r in await receipts(conn)] == ["delivered"]


async def test_get_on_the_plain_form_with_the_query_secret(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
) -> None:
    assert await call(server, f"/webhooks/zc?secret={SECRET}&{ZC_REPORT}", method="GET") == 200
    assert [r["status"] for r in await receipts(conn)] == ["delivered"]


@pytest.mark.parametrize(
    "path",
    [
        f"/webhooks/zc/wrong&{ZC_REPORT}",
        f"/webhooks/zc/&{ZC_REPORT}",  # empty
        f"/webhooks/zc/?{ZC_REPORT}",  # empty
        f"/webhooks/zc/%20?{ZC_REPORT}",  # blank
        f"/webhooks/zc/{SECRET}x&{ZC_REPORT}",
        f"/webhooks/zc/x{SECRET}?{ZC_REPORT}",
        f"/webhooks/zc/wrong?secret={SECRET}&{ZC_REPORT}",  # the path form: only the path counts
        f"/webhooks/zc/{SECRET}/more?{ZC_REPORT}",
        f"/webhooks/zc-open/anything?{ZC_REPORT}",  # no webhook_secret: never open
    ],
    ids=[
        "wrong",
        "empty-&",
        "empty-?",
        "blank",
        "longer",
        "prefixed",
        "right-query-wrong-path",
        "extra-segment",
        "no-secret-configured",
    ],
)
async def test_a_wrong_or_empty_path_secret_is_401_and_changes_nothing(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
    path: str,
) -> None:
    assert await call(server, path) == 401
    assert await receipts(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM rejected_webhooks") == 0
    assert server.handler.stats.unauthorized == 1


async def test_a_right_header_does_not_excuse_a_wrong_path_secret(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
) -> None:
    assert (
        await call(
            server,
            "/webhooks/sim/wrong",
            sim_events(sim_status()),
            content_type="application/json",
            headers=HEADER,
        )
        == 401
    )
    assert await receipts(conn) == []


@pytest.fixture
async def long_secret(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> AsyncIterator[tuple[WebhookServer, web.AppRunner]]:
    """A ZoomConnect and a simulator account whose secret is long enough to be masked and
    holds ``&``, ``/`` and ``%``; the writer masks it, as the daemon's does."""
    config = EngineConfig.model_validate(
        {
            "providers": {
                "zc": {**ACCOUNTS["zc"], "webhook_secret": LONG},
                "sim": {**ACCOUNTS["sim"], "webhook_secret": LONG},
            }
        }
    )
    adapters = adapters_for(config, session)
    running, runner = await serve_webhooks(
        pool, adapters, session, redact=Redactor.of(adapters.values())
    )
    yield running, runner
    await runner.cleanup()
    await running.writer.stop()


async def test_a_secret_with_reserved_characters_travels_percent_encoded(
    long_secret: tuple[WebhookServer, web.AppRunner], conn: asyncpg.Connection
) -> None:
    running, _ = long_secret
    url = running.handler.adapters["zc"].webhook_url("http://x")
    assert url == "http://x/webhooks/zc/path-secret-0123456789%26%2F%25"
    path = url.removeprefix("http://x")
    assert await call(running, f"{path}&{ZC_REPORT}") == 200
    assert await call(running, path.replace("%26", "&") + f"&{ZC_REPORT}") == 401
    assert [r["status"] for r in await receipts(conn)] == ["delivered"]


# --- nothing logs the secret ----------------------------------------------------------------


async def test_the_access_log_masks_the_path_secret(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Should the listener's access log be turned on, the secret segment is masked in the
    line and in the record's ``first_request_line`` (which the log formats print)."""
    config = EngineConfig.model_validate({"providers": {"zc": ACCOUNTS["zc"]}})
    writer = ReceiptWriter(pool)
    await writer.start()
    handler = WebhookHandler(adapters_for(config, session), writer)
    app = web.Application()
    app.add_routes(handler.routes())
    runner = web.AppRunner(app, logger=listener_logger())  # aiohttp's default access log
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    running = WebhookServer(f"http://{host}:{port}", writer, handler, session)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.INFO, "aiohttp.access"):
            assert await call(running, f"/webhooks/zc/{SECRET}&{ZC_REPORT}") == 200
            assert await call(running, f"/webhooks/zc/{SECRET}x?{ZC_REPORT}") == 401
            assert (
                await call(
                    running, f"/webhooks/zc/{SECRET}", b"{bad", content_type="application/json"
                )
                == 400
            )
    finally:
        await runner.cleanup()
        await writer.stop()
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 3
    lines = [TextFormatter("%(message)s").format(r) for r in caplog.records]
    assert all(SECRET not in line for line in lines), lines
    assert all("/webhooks/zc/**********" in TextFormatter("%(message)s").format(r) for r in access)
    assert len(await receipts(conn)) == 1


# --- rejected calls are stored ----------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"events": [{"id": "e", "note": "SECRET", oops', "not valid JSON"),
        (orjson.dumps({"events": "SECRET"}), ""),
        (None, "JSON"),  # nested too deep to store
        (orjson.dumps(sim_events(sim_status(message_id="m" * 600, note="SECRET"))), "600"),
    ],
    ids=["bad-json", "not-events", "too-deep", "id-too-long"],
)
async def test_a_refused_call_that_authenticated_is_stored_as_rejected(
    long_secret: tuple[WebhookServer, web.AppRunner],
    conn: asyncpg.Connection,
    body: bytes | None,
    reason: str,
) -> None:
    running, _ = long_secret
    if body is None:
        import json

        body = json.dumps(sim_events(sim_status(note="SECRET", extra=nested(260)))).encode()
    body = body.replace(b"SECRET", LONG.encode())
    path = f"/webhooks/sim/{quote(LONG, safe='')}"
    assert await call(running, path + "?x=1", body, content_type="application/json") == 400
    assert await receipts(conn) == []
    (row,) = await conn.fetch(
        "SELECT account, reason, content_type, query, body_bytes, excerpt FROM rejected_webhooks"
    )
    assert (row["account"], row["content_type"], row["query"], row["body_bytes"]) == (
        "sim",
        "application/json",
        "x=1",
        len(body),
    )
    assert reason in row["reason"]
    assert LONG not in row["excerpt"] and "**********" in row["excerpt"]
    assert len(row["excerpt"]) <= 2000
    (view,) = await conn.fetch("SELECT kind, account FROM rejected_payloads")
    assert tuple(view) == ("call", "sim")


async def test_a_refused_call_that_did_not_authenticate_is_not_stored(
    long_secret: tuple[WebhookServer, web.AppRunner], conn: asyncpg.Connection
) -> None:
    running, _ = long_secret
    assert (
        await call(running, "/webhooks/sim/wrong", b"{bad", content_type="application/json") == 401
    )
    assert await conn.fetchval("SELECT count(*) FROM rejected_webhooks") == 0


async def test_the_query_secret_is_not_kept_with_a_rejected_call(
    long_secret: tuple[WebhookServer, web.AppRunner], conn: asyncpg.Connection
) -> None:
    running, _ = long_secret
    query = urlencode({"secret": LONG, "status": "DELIVERED"})  # no messageId: unreadable
    assert await call(running, f"/webhooks/zc?{query}") == 400
    (row,) = await conn.fetch("SELECT reason, query FROM rejected_webhooks")
    assert row["query"] == "status=DELIVERED"
    assert "messageId" in row["reason"]


# --- Sunshine: one bad event, the rest applied ------------------------------------------------


async def test_sunshine_stores_a_bad_event_as_rejected_and_applies_the_rest(
    server: WebhookServer,  # noqa: F811
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
) -> None:
    _, (mid,) = await make_run(conn, {"account": "sunco", "provider_message_id": "pm-1"})
    bad = {
        "id": "evt-bad",
        "type": "conversation:message:delivery:user",
        "createdAt": "2021-08-27T15:53:06.744Z",
        "payload": {"message": {}},
    }
    body = sunco_envelope(sunco_delivery("user", "evt-good", "pm-1"), bad, sunco_reply("STOP"))
    assert (
        await call(server, f"/webhooks/sunco/{SUNCO_SECRET}", body, content_type="application/json")
        == 200
    )
    assert (
        await call(
            server,
            f"/webhooks/sunco/{SUNCO_SECRET}",
            body,  # a repeat: stored once
            content_type="application/json",
        )
        == 200
    )
    await Reconciler(pool).apply_pending()
    rows = await conn.fetch(
        "SELECT provider_event_id, outcome, error_detail FROM receipts ORDER BY id"
    )
    assert [(r["provider_event_id"], r["outcome"]) for r in rows] == [
        ("evt-good", "applied"),
        ("evt-bad", "rejected"),
    ]
    assert "payload.message.id" in rows[1]["error_detail"]
    assert (
        await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", mid) == "delivered"
    )
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 1  # the STOP reply
    (view,) = await conn.fetch("SELECT kind, account, excerpt FROM rejected_payloads")
    assert (view["kind"], view["account"]) == ("event", "sunco")
    assert "evt-bad" in view["excerpt"]


# --- the opt-out rule ---------------------------------------------------------------------------


async def test_an_opt_out_receipt_suppresses_after_a_restart(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, conn: asyncpg.Connection
) -> None:
    """FAILED_OPTOUT for a message sent before a restart: the adapter remembers no number and
    the report names none, yet the number is suppressed on the message's channel once the
    receipt is applied (as it arrives, in the writer's transaction), in one batch for many."""
    _, ids = await make_run(
        conn, *({"account": "zc", "provider_message_id": f"zc-{n}"} for n in range(1, 5))
    )
    await conn.execute("UPDATE messages SET channel = 'whatsapp' WHERE id = $1", ids[3])
    config = EngineConfig.model_validate({"providers": {"zc": ACCOUNTS["zc"]}})
    running, runner = await serve_webhooks(pool, adapters_for(config, session), session)
    try:  # a fresh process: the adapter has sent nothing
        for n, word in (
            (1, "FAILED_OPTOUT"),
            (2, "FAILED"),
            (3, "DELIVERED"),
            (4, "FAILED_OPTOUT"),
        ):
            assert (
                await call(running, f"/webhooks/zc/{SECRET}&status={word}&messageId=zc-{n}") == 200
            )
    finally:
        await runner.cleanup()
        await running.writer.stop()
    assert await Reconciler(pool).apply_pending() == 0  # every receipt applied on arrival
    phones = dict(await conn.fetch("SELECT id, phone FROM messages"))
    rows = await conn.fetch("SELECT phone, channel, source FROM suppressions ORDER BY phone")
    assert [tuple(r) for r in rows] == sorted(
        [(phones[ids[0]], "sms", "webhook:zc"), (phones[ids[3]], "whatsapp", "webhook:zc")]
    )
    statuses = await conn.fetch("SELECT status::text, error_code FROM messages ORDER BY id")
    assert [tuple(r) for r in statuses] == [
        ("undelivered", "FAILED_OPTOUT"),
        ("undelivered", "FAILED"),
        ("delivered", None),
        ("undelivered", "FAILED_OPTOUT"),
    ]
