"""Tracked links through `engine run`: the daemon's listener redirects the simulator's
clicks, the clicks land in link_clicks, and a winner test sends the rest its winner."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine import campaigns
from engine.config import EngineConfig
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from tests.e2e.test_daemon import Engine, write_config
from tests.integration.helpers import add_contacts, campaign, numbers
from tests.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
async def clicking_sim() -> AsyncIterator[tuple[RunningSimulator, int]]:
    port = free_port()
    settings = SimulatorSettings(
        seed=5,
        default=FamilySettings(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/sim",
            webhook_secret="s3cret-s3cret-s3cret",
            delivered=1.0,
            receipt_delay=(0.05, 0.2),
            click_rates={"Hi ": 1.0},  # every 'friendly' message is clicked
            clicks=0.0,  # no 'short' message is
        ),
    )
    async with await serve(settings, "127.0.0.1", 0) as running:
        yield running, port


async def _until(conn: asyncpg.Connection, query: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await conn.fetchval(query):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_clicks_through_the_daemon_choose_the_winner_for_the_rest(
    clicking_sim: tuple[RunningSimulator, int],
    conn: asyncpg.Connection,
    database_url: str,
    tmp_path: Path,
) -> None:
    simulator, port = clicking_sim
    config = write_config(tmp_path / "engine.yaml", simulator.url, port, rate=200)
    phones = numbers(120)
    await add_contacts(conn, [{"phone": p, "first_name": "Al"} for p in phones])
    spec = campaign(
        provider="sim",
        links={"track": True},  # base_url: webhooks.public_url, the daemon's listener
        message={
            "body": None,
            "variants": [
                {"name": "short", "body": "Sale https://shop.example.com/s"},
                {"name": "friendly", "body": "Hi {{ first_name }}! https://shop.example.com/f"},
            ],
            "winner": {"test_share": "50%", "after": "3s", "by": "clicks"},
        },
    )
    loaded = EngineConfig.model_validate({"providers": {"sim": {"type": "simulator"}}})
    await campaigns.apply_campaign(conn, spec, config, loaded)
    daemon = Engine(config, database_url)
    await daemon.start()
    try:
        decided = await _until(conn, "SELECT winner FROM ab_tests WHERE decided_at IS NOT NULL", 40)
        everyone = await _until(
            conn, "SELECT count(*) = 120 FROM messages WHERE status = 'delivered'", 40
        )
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
    assert decided and everyone
    assert await conn.fetchval("SELECT winner FROM ab_tests") == "friendly"
    clicks = await conn.fetch("SELECT agent, message_id FROM link_clicks")
    assert clicks and {c["agent"] for c in clicks} == {"human"}
    assert all(c["message_id"] is not None for c in clicks)
    assert simulator.stats.clicks == len(clicks)  # every redirect answered 302, every click kept
    variants = await conn.fetch(
        "SELECT variant, clickers, delivered FROM variant_outcomes ORDER BY variant"
    )
    friendly, short = variants
    assert short["clickers"] == 0 and friendly["clickers"] > 0
    assert friendly["delivered"] > short["delivered"]  # the rest got the winner
