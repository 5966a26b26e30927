"""Audience: groups and suppressions (opt-outs) of phone numbers.

Suppressions: ``channel='*'`` suppresses every channel. ``unsuppress`` with ``'*'`` lifts
every suppression of the number; with a channel it lifts only that channel's row (a
``'*'`` row still applies).

Numbers are :mod:`engine.phones`; importing contacts (which creates groups) is
:mod:`engine.contacts_import`; listing and removing them is :mod:`engine.contacts`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.phones import mask, require_e164
from engine.queries import QUERIES

log = logging.getLogger(__name__)


async def suppress(
    conn: asyncpg.Connection, phone: str, *, reason: str | None, source: str, channel: str = "*"
) -> bool:
    """Opt ``phone`` (E.164) out of ``channel``; True if it was not suppressed there yet."""
    require_e164(phone)
    added = await conn.fetchval(QUERIES["suppress"], phone, channel, reason, source)
    if added:
        log.info("suppressed %s on %s", mask(phone), channel, extra={"source": source})
    return bool(added)


async def unsuppress(conn: asyncpg.Connection, phone: str, *, channel: str = "*") -> bool:
    """Lift the suppression of ``phone`` on ``channel`` ('*': all); True if one was lifted."""
    require_e164(phone)
    status = await conn.execute(QUERIES["unsuppress"], phone, channel)
    lifted = str(status) != "DELETE 0"
    if lifted:
        log.info("unsuppressed %s on %s", mask(phone), channel)
    return lifted


async def is_suppressed(conn: asyncpg.Connection, phone: str, *, channel: str = "*") -> bool:
    """Whether a message to ``phone`` on ``channel`` is blocked by a suppression."""
    return bool(await conn.fetchval(QUERIES["is_suppressed"], phone, channel))


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group and how many contacts are in it."""

    name: str
    members: int
    created_at: datetime


async def list_groups(conn: asyncpg.Connection) -> list[GroupInfo]:
    """Every group by name, with its member count."""
    rows = await conn.fetch(QUERIES["list_groups"])
    return [GroupInfo(row["name"], row["members"], row["created_at"]) for row in rows]
