"""What the engine is doing, read for people: daemons, runs, queues, campaigns.

``engine status`` reads :func:`engine_status` (live daemons, runs in progress, queue
depth per account, receipts awaiting their message, account health); ``engine campaign
list`` and ``engine campaign runs`` read :func:`campaign_list` and :func:`campaign_runs`.
Read-only; the command line prints the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from engine import campaigns
from engine.queries import QUERIES


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The rows of ``engine status``, one list per section."""

    workers: list[asyncpg.Record]
    runs: list[asyncpg.Record]
    queues: list[asyncpg.Record]
    pending_receipts: list[asyncpg.Record]
    account_health: list[asyncpg.Record]


async def engine_status(conn: asyncpg.Connection) -> EngineStatus:
    """Live daemons, runs in progress, queues, unmatched receipts and account health."""
    from engine.daemon import DEAD_AFTER  # the daemon's own rule for a live worker

    return EngineStatus(
        workers=await conn.fetch(QUERIES["live_workers"], DEAD_AFTER),
        runs=await conn.fetch(QUERIES["runs_in_progress"]),
        queues=await conn.fetch(QUERIES["queue_depth"]),
        pending_receipts=await conn.fetch(QUERIES["receipts_pending"]),
        account_health=await conn.fetch(QUERIES["account_health"]),
    )


async def campaign_list(conn: asyncpg.Connection, *, archived: bool) -> list[asyncpg.Record]:
    """Each campaign with its next run and latest run (archived ones too when asked)."""
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES["list_campaigns"], archived)
    return rows


async def campaign_runs(conn: asyncpg.Connection, name: str, limit: int) -> list[asyncpg.Record]:
    """A campaign's runs, newest first (an EngineError for an unknown campaign)."""
    row = await campaigns.campaign_row(conn, name)
    runs: list[asyncpg.Record] = await conn.fetch(QUERIES["runs_of_campaign"], row["id"], limit)
    return runs
