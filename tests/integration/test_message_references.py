"""messages' references, checked once per statement (migration 0014) as the foreign keys
did per row: a run that does not exist or a contact that does not exist is refused;
deleting a run deletes its messages; deleting a contact keeps its messages, unlinked."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.integration.test_reports import add_campaign, add_run

COLUMNS = (
    "run_id",
    "contact_id",
    "phone",
    "account",
    "body",
    "encoding",
    "segments",
    "cost",
    "status",
)


async def contacts(conn: asyncpg.Connection, count: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO contacts (phone) SELECT '+2782' || lpad(i::text, 7, '0')"
        " FROM generate_series(1, $1) AS i RETURNING id",
        count,
    )
    return [row["id"] for row in rows]


def rows(run_id: int, contact_ids: list[int | None]) -> list[tuple[object, ...]]:
    return [
        (run_id, cid, f"+2783{i:07d}", "sim", "hi", "GSM-7", 1, 1, "queued")
        for i, cid in enumerate(contact_ids)
    ]


async def copy(conn: asyncpg.Connection, records: list[tuple[object, ...]]) -> None:
    await conn.copy_records_to_table("messages", records=records, columns=COLUMNS)


async def test_a_copy_naming_a_missing_run_is_refused_whole(conn: asyncpg.Connection) -> None:
    run_id = await add_run(conn, await add_campaign(conn, "c"), datetime.now(UTC))
    ids = await contacts(conn, 3)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="campaign_runs") as refused:
        await copy(conn, rows(run_id, ids) + rows(run_id + 99, [None]))
    assert f"(run_id)=({run_id + 99})" in (refused.value.detail or "")
    assert await conn.fetchval("SELECT count(*) FROM messages") == 0


async def test_a_copy_naming_a_missing_contact_is_refused(conn: asyncpg.Connection) -> None:
    run_id = await add_run(conn, await add_campaign(conn, "c"), datetime.now(UTC))
    ids = await contacts(conn, 2)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="contacts"):
        await copy(conn, rows(run_id, [*ids, max(ids) + 1000]))
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="contacts"):
        await conn.execute(
            "INSERT INTO messages (run_id, contact_id, phone, account, body, encoding,"
            " segments, cost, status)"
            " VALUES ($1, -5, '+27820000001', 'sim', 'hi', 'GSM-7', 1, 1, 'queued')",
            run_id,
        )
    await copy(conn, rows(run_id, [*ids, None]))  # no contact at all is fine
    assert await conn.fetchval("SELECT count(*) FROM messages") == 3


async def test_deleting_contacts_unlinks_their_messages(conn: asyncpg.Connection) -> None:
    run_id = await add_run(conn, await add_campaign(conn, "c"), datetime.now(UTC))
    ids = await contacts(conn, 4)
    await copy(conn, rows(run_id, ids))
    await conn.execute("DELETE FROM contacts WHERE id = ANY($1::bigint[])", ids[:2])
    linked = await conn.fetch("SELECT contact_id FROM messages ORDER BY id")
    assert [r["contact_id"] for r in linked] == [None, None, *ids[2:]]


async def test_deleting_a_campaign_deletes_its_runs_messages(conn: asyncpg.Connection) -> None:
    kept = await add_run(conn, await add_campaign(conn, "kept"), datetime.now(UTC))
    gone_campaign = await add_campaign(conn, "gone")
    gone = await add_run(conn, gone_campaign, datetime.now(UTC))
    await copy(conn, rows(kept, [None, None]) + rows(gone, [None, None, None]))
    await conn.execute("DELETE FROM campaigns WHERE id = $1", gone_campaign)
    left = await conn.fetch("SELECT run_id, count(*) FROM messages GROUP BY 1")
    assert {r["run_id"]: r["count"] for r in left} == {kept: 2}
