"""Migrations on a real PostgreSQL: idempotent, checksummed, safe to run concurrently."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from engine import db, migrate
from engine.errors import MigrationError
from engine.status import CampaignStatus, MessageStatus, RunStatus


async def test_migrate_twice_applies_once(empty_database_url: str) -> None:
    conn = await db.connect(empty_database_url)
    try:
        first = await migrate.migrate(conn)
        second = await migrate.migrate(conn)
        states = await migrate.status(conn)
    finally:
        await conn.close()
    assert [m.version for m in first] == [m.version for m in migrate.discover()]
    assert second == []
    assert all(state.applied_at is not None for state in states)


async def test_status_on_empty_database_lists_everything_pending(empty_database_url: str) -> None:
    conn = await db.connect(empty_database_url)
    try:
        states = await migrate.status(conn)
        created = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    finally:
        await conn.close()
    assert states and all(state.applied_at is None for state in states)
    assert created is False


async def test_changed_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    shutil.copytree(migrate.migrations_dir(), tmp_path, dirs_exist_ok=True)
    conn = await db.connect(empty_database_url)
    try:
        await migrate.migrate(conn, tmp_path)
        first = sorted(tmp_path.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await migrate.migrate(conn, tmp_path)
    finally:
        await conn.close()


async def test_new_migration_is_applied_after_the_others(
    empty_database_url: str, tmp_path: Path
) -> None:
    shutil.copytree(migrate.migrations_dir(), tmp_path, dirs_exist_ok=True)
    conn = await db.connect(empty_database_url)
    try:
        await migrate.migrate(conn, tmp_path)
        (tmp_path / "9999_extra.sql").write_text("CREATE TABLE extra (id int);")
        applied = await migrate.migrate(conn, tmp_path)
        assert [m.name for m in applied] == ["extra"]
        assert await conn.fetchval("SELECT to_regclass('extra') IS NOT NULL")
    finally:
        await conn.close()


async def test_misnamed_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        migrate.discover(tmp_path)


async def _run_engine(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_two_concurrent_migrate_processes(empty_database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_CONFIG"}
    env["DATABASE_URL"] = empty_database_url
    results = await asyncio.gather(*(_run_engine("db", "migrate", env=env) for _ in range(2)))
    assert [code for code, _, _ in results] == [0, 0], results
    outputs = sorted(out for _, out, _ in results)
    assert outputs[0].startswith("applied 0001_schema")
    assert outputs[1] == "database is up to date\n"
    conn = await db.connect(empty_database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    assert count == len(migrate.discover())


@pytest.mark.parametrize(
    ("pg_type", "enum"),
    [
        ("message_status", MessageStatus),
        ("run_status", RunStatus),
        ("campaign_status", CampaignStatus),
    ],
)
async def test_database_enums_equal_python_enums(
    conn: asyncpg.Connection, pg_type: str, enum: type
) -> None:
    labels = await conn.fetchval(f"SELECT enum_range(NULL::{pg_type})::text[]")
    assert labels == [member.value for member in enum]
