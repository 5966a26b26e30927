"""``engine db``: migrate, status, url, stop, prune."""

from __future__ import annotations

import argparse
from datetime import timedelta

from engine import db, migrate, prune
from engine.cli.confirm import confirm
from engine.cli.context import Context
from engine.cli.parsing import Commands, command, group, yes
from engine.timing import utcnow
from engine.values import parse_duration


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


def _age(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


async def db_prune(ctx: Context, args: argparse.Namespace) -> int:
    """Delete old runs' messages and receipts; their outcomes stay in campaign_outcomes."""
    before = prune.cutoff(utcnow(), args.older_than)
    async with ctx.connection() as conn:
        would = await prune.count(conn, before)
        when = before.isoformat(timespec="seconds")
        if args.dry_run:
            print(
                f"would prune {would.runs} runs that ended before {when}: {would.messages}"
                f" messages, {would.receipts} receipts, {would.rejected} refused webhook calls"
            )
            return 0
        if not (would.runs or would.receipts or would.rejected):
            print(f"nothing ended before {when}")
            return 0
        confirm(
            f"Delete the messages of {would.runs} runs that ended before {when} and the"
            f" receipts received before it ({would.messages} messages, {would.receipts}"
            " receipts; each run's outcomes are kept)?",
            args,
        )
        done = await prune.prune(conn, before)
    print(
        f"pruned {done.runs} runs: {done.messages} messages, {done.receipts} receipts,"
        f" {done.rejected} refused webhook calls (their outcomes stay in campaign_outcomes)"
    )
    return 0


def add_commands(sub: Commands) -> None:
    """``engine db ...``."""
    dbs = group(sub, "db", "database: migrate, status, url, stop, prune")
    command(dbs, "migrate", db_migrate, "apply pending migrations")
    command(dbs, "status", db_status, "list applied and pending migrations")
    command(dbs, "url", db_url, "print the connection URL in use (for psql)")
    command(dbs, "stop", db_stop, "stop the embedded PostgreSQL server")
    pruning = command(
        dbs, "prune", db_prune, "delete old runs' messages and receipts, keeping their outcomes"
    )
    pruning.add_argument(
        "--older-than",
        type=_age,
        required=True,
        metavar="AGE",
        help="runs that ended, and receipts received, more than AGE ago (e.g. 90d; at least 1d)",
    )
    pruning.add_argument("--dry-run", action="store_true", help="only count what would go")
    yes(pruning)
