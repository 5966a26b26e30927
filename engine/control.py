"""Campaign control: pause, resume and cancel a campaign and its runs, and wake the daemons.

Every change here is followed by ``NOTIFY engine`` so a running daemon sees it within a
second instead of at its next poll. Pause and cancel record who asked in the run's reason;
resume clears it.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from engine import campaigns
from engine.queries import QUERIES


class Controlled(NamedTuple):
    """What a control statement did: the campaign's status before it, and its rows."""

    before: str
    rows: list[asyncpg.Record]


async def wake_daemons(conn: asyncpg.Connection, payload: str) -> None:
    """Tell running daemons there is work (``tick``: new runs) or a change (``control``)."""
    await conn.execute(QUERIES["notify_work"], payload)


async def _control(conn: asyncpg.Connection, query: str, name: str, *args: str) -> Controlled:
    """Run a control query on a campaign that must exist, then wake the daemons."""
    before = str((await campaigns.campaign_row(conn, name))["status"])
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES[query], name, *args)
    await wake_daemons(conn, "control")
    return Controlled(before, rows)


async def pause_campaign(conn: asyncpg.Connection, name: str, by: str) -> Controlled:
    """Pause a campaign and its runs in progress; one row per run paused."""
    return await _control(conn, "pause_campaign", name, by)


async def resume_campaign(conn: asyncpg.Connection, name: str) -> Controlled:
    """Resume a paused campaign and its paused runs; one row per run resumed."""
    return await _control(conn, "resume_campaign", name)


async def cancel_campaign(conn: asyncpg.Connection, name: str, by: str) -> Controlled:
    """Cancel a campaign; its one row counts the runs and unsent messages cancelled."""
    return await _control(conn, "cancel_campaign", name, by)
