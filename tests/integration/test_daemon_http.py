"""The daemon's HTTP side: /healthz, /metrics and /reports/{campaign}."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine import campaigns
from engine.config import EngineConfig
from engine.daemon import Daemon
from engine.simulator import FamilySettings, SimulatorSettings, serve
from tests.integration.helpers import add_contacts, campaign, numbers
from tests.net import free_port


async def running_daemon(
    conn: asyncpg.Connection, database_url: str, **webhooks: Any
) -> AsyncIterator[tuple[Daemon, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    family = FamilySettings(webhook_url=f"{url}/webhooks/sim", webhook_secret="s")
    async with await serve(SimulatorSettings(default=family), "127.0.0.1", 0) as sim:
        config = EngineConfig.model_validate(
            {
                "webhooks": {"listen": f"127.0.0.1:{port}", "public_url": url, **webhooks},
                "providers": {
                    "sim": {"type": "simulator", "base_url": sim.url, "webhook_secret": "s"}
                },
            }
        )
        await add_contacts(conn, [{"phone": p} for p in numbers(10)])
        await campaigns.apply_campaign(
            conn, campaign(provider="sim"), Path("t.yaml"), config, now=datetime.now(UTC)
        )
        stop = asyncio.Event()
        daemon = Daemon(config, database_url, poll_interval=0.2)
        task = asyncio.create_task(daemon.run(stop))
        try:
            for _ in range(100):
                done = await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE status IN"
                    " ('delivered', 'undelivered', 'failed')"
                )
                if done == 10:
                    break
                await asyncio.sleep(0.1)
            yield daemon, url
        finally:
            stop.set()
            await task


TOKEN = "reports-token-0123456789"


@pytest.fixture
async def daemon(conn: asyncpg.Connection, database_url: str) -> AsyncIterator[tuple[Daemon, str]]:
    async for found in running_daemon(conn, database_url, reports_token=TOKEN):
        yield found


async def test_health_metrics_and_report_page(daemon: tuple[Daemon, str]) -> None:
    running, url = daemon
    await running._refresh_metrics(running._pool)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
        assert 'engine_messages_sent_total{account="sim",outcome="accepted"} 10.0' in text
        assert 'engine_webhooks_total{account="sim",result="accepted"}' in text
        assert 'engine_runs{status="sending"}' in text or 'engine_runs{status="completed"}' in text
        async with session.get(f"{url}/reports/promo", params={"token": TOKEN}) as resp:
            assert resp.status == 200
            assert "<svg" in await resp.text()
        async with session.get(f"{url}/reports/nope", params={"token": TOKEN}) as resp:
            assert resp.status == 404


async def test_reports_need_the_token_when_one_is_set(
    conn: asyncpg.Connection, database_url: str
) -> None:
    async for _, url in running_daemon(conn, database_url, reports_token="t0ken"):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/reports/promo") as resp:
                assert resp.status == 401
            async with session.get(
                f"{url}/reports/promo", headers={"Authorization": "Bearer t0ken"}
            ) as resp:
                assert resp.status == 200


async def test_reports_are_closed_by_default_even_to_loopback(
    conn: asyncpg.Connection, database_url: str
) -> None:
    """Behind a reverse proxy on the same host every client's TCP peer is 127.0.0.1, so
    being local proves nothing: with neither a token nor ``reports_public`` no one sees
    a report (a forwarding header changes nothing)."""
    async for _, url in running_daemon(conn, database_url):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/reports/promo") as resp:
                assert resp.status == 401
            async with session.get(
                f"{url}/reports/promo", headers={"X-Forwarded-For": "127.0.0.1"}
            ) as resp:
                assert resp.status == 401


async def test_reports_public_loopback_opens_them_to_local_peers(
    conn: asyncpg.Connection, database_url: str
) -> None:
    async for _, url in running_daemon(conn, database_url, reports_public="loopback"):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/reports/promo") as resp:
            assert resp.status == 200


async def test_a_reports_token_that_is_not_text_is_refused(
    conn: asyncpg.Connection, database_url: str
) -> None:
    async for _, url in running_daemon(conn, database_url, reports_token=TOKEN):
        assert (
            await raw_status(
                url,
                b"GET /reports/promo HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer \xff\xfe\r\n"
                b"Connection: close\r\n\r\n",
            )
            == 401
        )


async def raw_status(url: str, request: bytes) -> int:
    """The status of one request written byte for byte (headers aiohttp would not send)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()
