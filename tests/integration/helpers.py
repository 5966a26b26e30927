"""Small builders shared by the database tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from engine import campaigns, scheduler
from engine.config import EngineConfig
from engine.expander import Expander
from engine.providers.base import Adapter, Inbound, OptChange, Receipt, WebhookEvents
from engine.spec import Campaign
from engine.webhooks import path_secret, same_secret


def campaign(name: str = "promo", **overrides: Any) -> Campaign:
    """A valid campaign (now, group 'all', simulator account).

    Overrides replace top-level keys; mappings other than ``schedule`` are merged.
    """
    data: dict[str, Any] = {
        "name": name,
        "provider": "simulator",
        "schedule": {"now": True},
        "audience": {"groups": ["all"]},
        "message": {"body": "Hi {{ first_name | default('there') }}, {{ offer }}"},
        "vars": {"offer": "20% off"},
    }
    for key, value in overrides.items():
        if key != "schedule" and isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Campaign.from_spec(data)


async def add_contacts(
    conn: asyncpg.Connection, rows: Iterable[Mapping[str, Any]], groups: Iterable[str] = ("all",)
) -> list[int]:
    """Insert contacts (dicts with phone and optional fields) and add them to groups."""
    ids = []
    for row in rows:
        ids.append(
            await conn.fetchval(
                "INSERT INTO contacts (phone, first_name, last_name, locale, timezone, attributes)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (phone) DO UPDATE SET phone = "
                "EXCLUDED.phone RETURNING id",
                row["phone"],
                row.get("first_name"),
                row.get("last_name"),
                row.get("locale"),
                row.get("timezone"),
                dict(row.get("attributes", {})),
            )
        )
    for group in groups:
        gid = await conn.fetchval(
            "INSERT INTO groups (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name ="
            " EXCLUDED.name RETURNING id",
            group,
        )
        await conn.execute(
            "INSERT INTO group_members (group_id, contact_id) SELECT $1, unnest($2::bigint[])"
            " ON CONFLICT DO NOTHING",
            gid,
            ids,
        )
    return ids


def numbers(count: int, start: int = 1000001, prefix: str = "+2782") -> list[str]:
    """Distinct valid South African mobile numbers, none ending in 0000 (the simulator
    always rejects those)."""
    found: list[str] = []
    value = start
    while len(found) < count:
        if value % 10000:
            found.append(f"{prefix}{value:07d}")
        value += 1
    return found


async def fire_and_expand(
    conn: asyncpg.Connection, pool: asyncpg.Pool, spec: Campaign, config: EngineConfig
) -> int:
    """Apply a 'now' campaign, create its run and expand it to 'sending'; the run id."""
    now = datetime.now(UTC)
    await campaigns.apply_campaign(conn, spec, Path("test.yaml"), config, now=now)
    [firing] = await scheduler.create_due_runs(conn, now, timedelta(hours=1))
    assert firing.run_id is not None
    result = await Expander(pool, config, "expander").run_once()
    assert result is not None
    return firing.run_id


async def statuses(conn: asyncpg.Connection, run_id: int) -> dict[str, str]:
    """phone -> status of every message of a run."""
    rows = await conn.fetch("SELECT phone, status::text FROM messages WHERE run_id = $1", run_id)
    return {r["phone"]: r["status"] for r in rows}


@dataclass
class Receiver:
    """The engine's webhook listener, reduced to what the simulator tests check: each call
    is authenticated with the adapter's ``webhook_authentic`` and read with its
    ``parse_webhook``, as the daemon does."""

    url: str = ""
    adapters: dict[str, Adapter[Any]] = field(default_factory=dict)
    #: (account, what the call said), in arrival order
    events: list[tuple[str, WebhookEvents]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    refused: int = 0
    in_path: int = 0  # calls authenticated by a path secret
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        adapter = self.adapters[name]
        params: Mapping[str, str] = request.query
        if "secret" in request.match_info:  # /webhooks/{name}/{secret}, as the listener reads it
            secret, tail = path_secret(request.raw_path) or ("", [])
            wanted = adapter.account.webhook_secret
            authentic = wanted is not None and same_secret(secret, wanted.get_secret_value())
            params = {**dict(tail), **request.query}
            self.in_path += authentic
        else:
            authentic = adapter.webhook_authentic(request.headers, request.query)
        if not authentic:
            self.refused += 1
            self.arrived.set()
            return web.Response(status=401)
        content_type = request.headers.get("Content-Type", "")
        parsed = adapter.parse_webhook(content_type, await request.read(), params)
        self.content_types.append(content_type)
        self.queries.append(dict(params))
        self.events.append((name, parsed))
        self.arrived.set()
        return web.Response(text="ok")

    def receipts(self, name: str | None = None) -> list[Receipt]:
        """Every receipt received (for account ``name`` only, if given)."""
        return [r for n, e in self.events if name in (None, n) for r in e.receipts]

    def opt_changes(self) -> list[OptChange]:
        return [o for _, e in self.events for o in e.opt_changes]

    def inbound(self) -> list[Inbound]:
        return [i for _, e in self.events for i in e.inbound]

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()
