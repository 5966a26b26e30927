"""Fuzz: arbitrary calls to every provider's webhook, through the real aiohttp app.

Whatever the bytes, headers and query, the answer is never a 5xx (PostgreSQL is up, so
nothing may invite a provider to retry for ever), no traceback or error reaches the logs,
every call is answered within a bound, and a call that is not answered 200 stored nothing.
Most calls carry the account's secret, so the parsers behind authentication are
reached; many start from a documented payload with one part replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from tests.integration.test_webhooks import (
    ACCOUNTS,
    CASES,
    SUNCO_SECRET,
    ZINGLE_BLOCK,
    WebhookServer,
    adapters_for,
    raw_status,
    serve_webhooks,
    sim_events,
    sim_status,
    sunco_envelope,
    sunco_reply,
    zenvia_message,
)

#: the secret of each account, and where it travels
AUTH: dict[str, tuple[str, str, str]] = {
    "sim": ("header", "X-Webhook-Secret", "s3cret"),
    "zc": ("query", "secret", "s3cret"),
    "zenvia": ("header", "X-Webhook-Secret", "s3cret"),
    "zingle": ("header", "X-Webhook-Secret", "s3cret"),
    "sunco": ("header", "X-API-Key", SUNCO_SECRET),
    "courier": ("query", "secret", "s3cret"),
}
DOCUMENTED: list[tuple[str, Any]] = [(case[0], case[1]) for case in CASES.values()] + [
    (
        "sim",
        sim_events(
            sim_status(), {"id": "i1", "type": "inbound", "from": "+27820000001", "text": "STOP"}
        ),
    ),
    ("zenvia", zenvia_message("STOP")),
    ("zingle", ZINGLE_BLOCK),
    ("sunco", sunco_envelope(sunco_reply("STOP"))),
]
TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "",
    "text/plain",
    "application/json; charset=latin-1",
    "multipart/form-data; boundary=x",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=40
)


def dumps(value: Any) -> bytes:
    """JSON as a provider might write it: non-ASCII as is, integers of any size."""
    return json.dumps(value, ensure_ascii=False).encode()


def replace_part(payload: Any, path: list[int], value: Any) -> Any:
    """``payload`` with the part ``path`` picks (by index into keys or items) replaced."""
    if not path or not isinstance(payload, dict | list) or not payload:
        return value
    keys = list(payload) if isinstance(payload, dict) else list(range(len(payload)))
    key = keys[path[0] % len(keys)]
    copy: Any = dict(payload) if isinstance(payload, dict) else list(payload)
    copy[key] = replace_part(payload[key], path[1:], value)
    return copy


@st.composite
def raw_headers(draw: st.DrawFn) -> tuple[str, bytes]:
    """(account, a raw request) whose secret header holds arbitrary bytes."""
    account = draw(st.sampled_from([a for a, (where, _, _) in AUTH.items() if where == "header"]))
    name = AUTH[account][1].encode()
    value = draw(st.binary(min_size=1, max_size=40).filter(lambda b: not set(b) & set(b"\r\n\x00")))
    return account, (
        b"POST /webhooks/%s HTTP/1.1\r\nHost: x\r\n%s: %s\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}" % (account.encode(), name, value)
    )


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, bytes, str, dict[str, str], dict[str, str]]:
    """(account, body, content type, query, headers) of one call."""
    account, documented = draw(st.sampled_from(DOCUMENTED))
    kind = draw(
        st.sampled_from(["documented", "mutated", "mutated", "deep", "long", "json", "bytes"])
    )
    if kind == "documented" or isinstance(documented, bytes):
        body = documented if isinstance(documented, bytes) else dumps(documented)
    elif kind in ("mutated", "deep", "long"):
        path = draw(st.lists(st.integers(0, 20), max_size=6))
        value = draw(json_values)
        if kind == "deep":  # past what can be stored (254) or parsed (1024)
            for _ in range(draw(st.sampled_from([300, 1100]))):
                value = [value]
        elif kind == "long":  # past what an index entry holds
            value = draw(st.binary(min_size=1500, max_size=2000)).hex()
        body = dumps(replace_part(documented, path, value))
    elif kind == "json":
        body = dumps(draw(json_values))
    else:
        body = draw(st.binary(max_size=300))
    query = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3))
    headers = draw(
        st.dictionaries(
            st.sampled_from(["X-Webhook-Secret", "Authorization", "X-API-Key", "X-Other"]),
            header_text,
            max_size=2,
        )
    )
    where, name, secret = AUTH[account]
    if draw(st.sampled_from([True, True, True, False])):  # mostly: the parsers are fuzzed
        (headers if where == "header" else query)[name] = secret
    ctype = draw(st.sampled_from(TYPES) | header_text)
    return account, body, ctype, query, headers


@pytest.fixture
async def fuzz_server(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> AsyncIterator[WebhookServer]:
    config = EngineConfig.model_validate({"providers": ACCOUNTS})
    running, runner = await serve_webhooks(pool, adapters_for(config, session), session)
    yield running
    await runner.cleanup()
    await running.writer.stop()


async def stored(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM inbound_messages)"
            " + (SELECT count(*) FROM suppressions)"
        )
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls())
async def test_no_call_to_any_webhook_gets_a_5xx_a_traceback_or_a_partial_write(
    fuzz_server: WebhookServer,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    call: tuple[str, bytes, str, dict[str, str], dict[str, str]],
) -> None:
    account, body, ctype, query, headers = call
    caplog.clear()
    before = await stored(conn)
    try:
        async with asyncio.timeout(10):  # a hang fails the test, never the suite
            status = await fuzz_server.post(
                account, body, query=query, headers=headers, content_type=ctype
            )
    except (ValueError, aiohttp.InvalidURL):
        return  # the client refused to send it (a header it cannot encode): nothing to test
    assert status < 500, call
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
    if status != 200:
        assert await stored(conn) == before, call


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=raw_headers())
async def test_any_bytes_in_a_secret_header_get_a_4xx_and_no_traceback(
    fuzz_server: WebhookServer, caplog: pytest.LogCaptureFixture, call: tuple[str, bytes]
) -> None:
    _, request = call
    caplog.clear()
    async with asyncio.timeout(10):
        status = await raw_status(fuzz_server.url, request)
    assert 400 <= status < 500, call
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
