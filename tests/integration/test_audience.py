"""Suppressions (opt-outs) on a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from engine.audience import is_suppressed, suppress, unsuppress
from engine.phones import ContactsError


async def test_suppress_and_unsuppress(conn: asyncpg.Connection) -> None:
    ann, bob = "+27821234567", "+27831112222"

    assert await suppress(conn, ann, reason="STOP reply", source="sms-reply:zc-main") is True
    assert await suppress(conn, ann, reason="again", source="cli") is False
    assert await suppress(conn, bob, reason=None, source="cli", channel="whatsapp") is True

    row = await conn.fetchrow("SELECT * FROM suppressions WHERE phone = $1", ann)
    assert (row["channel"], row["reason"], row["source"]) == (
        "*",
        "STOP reply",
        "sms-reply:zc-main",
    )
    assert await is_suppressed(conn, ann, channel="sms") is True  # '*' covers every channel
    assert await is_suppressed(conn, bob, channel="whatsapp") is True
    assert await is_suppressed(conn, bob, channel="sms") is False
    assert await is_suppressed(conn, "+14155552671") is False

    assert await unsuppress(conn, bob, channel="sms") is False
    assert await unsuppress(conn, ann) is True
    assert await unsuppress(conn, ann) is False
    assert await is_suppressed(conn, ann, channel="sms") is False
    await suppress(conn, bob, reason=None, source="cli", channel="sms")
    assert await unsuppress(conn, bob) is True  # '*' lifts every channel
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_suppress_wants_e164(conn: asyncpg.Connection) -> None:
    for phone in ("082 123 4567", "+27821234567\n", "27821234567"):
        with pytest.raises(ContactsError, match=r"not an E\.164 number"):
            await suppress(conn, phone, reason=None, source="cli")
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
