"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied in order.

Each file runs in its own transaction, under a session advisory lock so that two
processes migrating at once take turns (the second finds nothing to do). Applied files
are recorded with a SHA-256 checksum; an applied file whose content changed is refused,
because the database no longer matches what the file says.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import asyncpg

from engine.errors import MigrationError
from engine.queries import QUERIES

log = logging.getLogger(__name__)

#: pg_advisory_lock key: "campaign-engine migrations"
LOCK_KEY = 0x6D6967726174

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    """A migration and, if applied, when."""

    migration: Migration
    applied_at: datetime | None


def migrations_dir() -> Path:
    """The packaged migrations folder (``migrations/`` at the repository root links to it)."""
    return Path(str(resources.files("engine") / "migrations"))


def discover(directory: Path | None = None) -> list[Migration]:
    """All migration files in version order; a misnamed file is an error."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    await conn.execute(QUERIES["migrations_bootstrap"])
    rows = await conn.fetch(QUERIES["applied_migrations"])
    return {row["version"]: row for row in rows}


def _check_unchanged(migration: Migration, row: asyncpg.Record) -> None:
    if row["checksum"] != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name}.sql was changed after it was "
            "applied; add a new migration instead of editing an applied one"
        )


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply every pending migration; return the ones applied by this call."""
    migrations = discover(directory)
    await conn.execute(QUERIES["migrations_lock"], LOCK_KEY)
    try:
        applied = await _applied(conn)
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                _check_unchanged(migration, applied[migration.version])
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    QUERIES["record_migration"],
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute(QUERIES["migrations_unlock"], LOCK_KEY)


async def status(conn: asyncpg.Connection, directory: Path | None = None) -> list[MigrationState]:
    """Every known migration with its applied time (None when pending)."""
    migrations = discover(directory)
    exists = await conn.fetchval(QUERIES["migrations_table_exists"])
    applied = await _applied(conn) if exists else {}
    states = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None:
            _check_unchanged(migration, row)
        states.append(MigrationState(migration, row["applied_at"] if row else None))
    return states


async def require_current(
    conn: asyncpg.Connection, directory: Path | None = None, *, where: str | None = None
) -> None:
    """Raise MigrationError naming the command to run when migrations are pending.

    ``where`` names the database (a redacted URL or a data folder) when it has no tables at
    all: the usual sign of a command run outside the project's folder.
    """
    if where is not None and not await conn.fetchval(QUERIES["migrations_table_exists"]):
        raise MigrationError(f"the database at {where} has no tables; run `engine db migrate`")
    pending = [s.migration for s in await status(conn, directory) if s.applied_at is None]
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise MigrationError(
            f"the database is not up to date (pending: {names}); run 'engine db migrate'"
        )
