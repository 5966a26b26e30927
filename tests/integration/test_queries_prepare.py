"""Every named query prepares against the migrated database.

The queries are read from ``engine/sql/*.sql`` when the tests are collected, so a query
added in any file is checked too. PostgreSQL parses, resolves and plans each one without
running it: a typo, a dropped column or a wrong parameter type fails here, not when a
campaign first reaches the query.
"""

from __future__ import annotations

import asyncpg

from engine import queries

#: named queries that create the temporary tables other named queries use
TEMP_TABLES = ("create_import_stage",)


def test_queries_are_found() -> None:
    """The loader reads every file of engine/sql (an empty loop would pass silently)."""
    found = queries.load_all()
    assert len(found) > 50
    assert {"claim_messages", "apply_receipts", "notify_work"} <= set(found)


async def test_every_named_query_prepares(database_url: str) -> None:
    """PostgreSQL accepts each query: its tables, columns, functions and types exist.

    One database for all of them (a clone per query would be slow); the failure lists
    every query that does not prepare, with PostgreSQL's reason.
    """
    failures = []
    conn = await asyncpg.connect(database_url)
    named = queries.load_all()
    try:
        # queries on a connection's temporary tables prepare once those tables exist
        for setup in TEMP_TABLES:
            await conn.execute(named[setup])
        for name, sql in sorted(named.items()):
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        await conn.close()
    assert not failures, "named queries that do not prepare:\n" + "\n".join(failures)
