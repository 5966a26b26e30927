"""``engine db``: migrate, status, url, stop."""

from __future__ import annotations

import argparse

from engine import db, migrate
from engine.cli.context import Context
from engine.cli.parsing import Commands, command, group


async def db_migrate(ctx: Context, args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    async with ctx.connection(migrated=False) as conn:
        applied = await migrate.migrate(conn)
    if not applied:
        print("database is up to date")
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    return 0


async def db_status(ctx: Context, args: argparse.Namespace) -> int:
    """List applied and pending migrations."""
    async with ctx.connection(migrated=False) as conn:
        states = await migrate.status(conn)
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
        print(f"{state.migration.version:04d}_{state.migration.name:<30} {when}")
    return 0


async def db_url(ctx: Context, args: argparse.Namespace) -> int:
    """Print the connection URL (the embedded server is left running for psql)."""
    print(ctx.database_url(keep_running=True))
    return 0


async def db_stop(ctx: Context, args: argparse.Namespace) -> int:
    """Stop the embedded server that ``engine db url`` left running."""
    stopped = db.stop_embedded(ctx.config.data_dir)
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL is not running")
    return 0


def add_commands(sub: Commands) -> None:
    """``engine db ...``."""
    dbs = group(sub, "db", "database: migrate, status, url, stop")
    command(dbs, "migrate", db_migrate, "apply pending migrations")
    command(dbs, "status", db_status, "list applied and pending migrations")
    command(dbs, "url", db_url, "print the connection URL in use (for psql)")
    command(dbs, "stop", db_stop, "stop the embedded PostgreSQL server")
