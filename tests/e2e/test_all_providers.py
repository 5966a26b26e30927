"""One daemon sends a small campaign through each of the five providers (and the simulator's
own protocol) and every recipient ends with the right status, each number sent to once.

ZoomConnect and courier call the path-secret URL (``/webhooks/{account}/{secret}``) that
``engine providers subscribe`` prints for them; ZoomConnect glues its parameters onto it
with ``?``, ``&`` (no ``?`` at all) or ``?&``, or posts them as form fields."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import campaigns
from engine.config import EngineConfig
from engine.daemon import Daemon
from engine.simulator import FAMILIES, FamilySettings, SimulatorSettings, serve
from tests.integration.helpers import add_contacts, campaign, numbers
from tests.net import free_port

pytestmark = pytest.mark.slow

ACCOUNTS: dict[str, dict[str, Any]] = {
    "sim": {"type": "simulator", "webhook_secret": "sim-secret"},
    "zc": {
        "type": "zoomconnect",
        "email": "ops@example.com",
        "token": "zc-token",
        "webhook_secret": "zc-secret",
        "bulk": True,
        "batch_size": 5,
    },
    "zen": {
        "type": "zenvia",
        "token": "zen-token",
        "sender": "acme",
        "webhook_secret": "zen-secret",
    },
    "zingle": {
        "type": "zingle",
        "username": "ops@example.com",
        "password": "pw",
        "service_id": "e545a46e-bfcd-4db2-bfee-8e590fdcb33f",
        "channel_type_id": "0e3d71ee-9518-4b9b-b95a-dea251829887",
        "sender": "+17605554396",
        "webhook_secret": "zingle-secret",
    },
    "sunco": {
        "type": "sunshine",
        "app_id": "5d8cff3cd55b040010928b5b",
        "key_id": "app_67a0e949f0305f4a391e9d97",
        "key_secret": "sunco-key-secret",
        "integration_id": "5e4af71a81966cfff3ef6550",
        "webhook_secret": "sunco-secret",
    },
    "cour": {
        "type": "courier",
        "token": "cour-token",
        "account_id": "acc-1",
        "number_id": "num-1",
        "webhook_secret": "cour-secret",
    },
}
FAMILY = {
    "sim": "simulator",
    "zc": "zoomconnect",
    "zen": "zenvia",
    "zingle": "zingle",
    "sunco": "sunshine",
    "cour": "courier",
}
FINAL = {"delivered", "undelivered", "failed"}


async def test_a_campaign_through_every_provider(
    conn: asyncpg.Connection, database_url: str
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    families = {
        FAMILY[name]: FamilySettings(
            webhook_url=None if name in ("cour", "zingle") else f"{public}/webhooks/{name}",
            webhook_secret=account["webhook_secret"],
            delivered=0.8,
            undelivered=0.1,
            receipt_delay=(0.05, 0.2),
            duplicates=0.2,
            out_of_order=0.2,
        )
        for name, account in ACCOUNTS.items()
    }
    # the URL subscribe prints for ZoomConnect, as pasted in its dashboard
    families["zoomconnect"] = families["zoomconnect"].model_copy(
        update={
            "webhook_url": f"{public}/webhooks/zc/{ACCOUNTS['zc']['webhook_secret']}",
            "webhook_secret": None,
        }
    )
    async with await serve(SimulatorSettings(seed=5, families=families), "127.0.0.1", 0) as sim:
        config = EngineConfig.model_validate(
            {
                "webhooks": {"listen": f"127.0.0.1:{port}", "public_url": public},
                "providers": {
                    name: {**account, "base_url": sim.url, "rate": 50}
                    for name, account in ACCOUNTS.items()
                },
            }
        )
        phones: dict[str, list[str]] = {}
        for index, name in enumerate(ACCOUNTS):
            phones[name] = numbers(8, start=3000001 + index * 100)
            await add_contacts(conn, [{"phone": p} for p in phones[name]], [f"g-{name}"])
            spec = campaign(f"via-{name}", provider=name, audience={"groups": [f"g-{name}"]})
            await campaigns.apply_campaign(
                conn, spec, Path("t.yaml"), config, now=datetime.now(UTC)
            )
        stop = asyncio.Event()
        daemon = Daemon(config, database_url, poll_interval=0.2)
        running = asyncio.create_task(daemon.run(stop))
        try:
            got = await _settled(conn, running)
        finally:
            stop.set()
            await running
    for name in ACCOUNTS:
        statuses = got[f"via-{name}"]
        assert sum(statuses.values()) == 8, (name, statuses)
        # Zingle never says delivered; its failures come after acceptance: undelivered
        expected = {"sent", "failed", "undelivered"} if name == "zingle" else FINAL
        assert set(statuses) <= expected, (name, statuses)
    every = [p.lstrip("+") for group in phones.values() for p in group]
    received = {number.lstrip("+"): count for number, count in sim.stats.per_number.items()}
    assert sorted(received) == sorted(every)  # Zenvia's 'to' carries no '+'
    assert set(received.values()) == {1}
    joins = sim.app[FAMILIES]["zoomconnect"].joins  # type: ignore[attr-defined]
    assert joins["&"] > 0, joins  # the bare '&' join was played, and read
    assert sum(joins.values()) >= 8
    stored = await conn.fetchval("SELECT count(*) FROM receipts WHERE account = 'zc'")
    assert stored >= 8 and await conn.fetchval("SELECT count(*) FROM rejected_webhooks") == 0


async def _settled(
    conn: asyncpg.Connection, running: asyncio.Task[None]
) -> dict[str, dict[str, int]]:
    deadline = time.monotonic() + 40
    while True:
        if running.done():
            await running
        rows = await conn.fetch(
            "SELECT c.name, m.status::text, count(*) AS n FROM messages m"
            " JOIN campaign_runs r ON r.id = m.run_id JOIN campaigns c ON c.id = r.campaign_id"
            " GROUP BY 1, 2"
        )
        got: dict[str, dict[str, int]] = {}
        for row in rows:
            got.setdefault(row["name"], {})[row["status"]] = row["n"]
        done = len(got) == len(ACCOUNTS) and all(
            set(s) <= (FINAL | ({"sent"} if name == "via-zingle" else set()))
            for name, s in got.items()
        )
        if done or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.3)
