"""``engine run`` and ``engine status``: the daemon, and what the daemons are doing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import asyncpg

from engine import migrate, overview
from engine.cli.context import Context
from engine.cli.output import print_table
from engine.cli.parsing import Commands, command
from engine.errors import EngineError
from engine.providers import adapter_for

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM or SIGINT: stop gracefully; a second one exits at once."""
    loop = asyncio.get_running_loop()
    received = 0

    def handle(signum: int) -> None:
        nonlocal received
        received += 1
        if received > 1:
            print("engine: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        log.warning("signal %s: stopping (send it again to exit at once)", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def run_daemon(ctx: Context, args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    from engine.daemon import ROLES, Daemon

    roles = frozenset(r.strip() for r in args.only.split(",")) if args.only else ROLES
    if not roles <= ROLES:
        raise EngineError(f"--only takes {', '.join(sorted(ROLES))}")
    async with ctx.connection(migrated=False) as conn:  # the daemon starts on a fresh database
        await migrate.migrate(conn)
    daemon = Daemon(ctx.config, ctx.database_url(), roles)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await daemon.run(stop)
    return 0


async def status(ctx: Context, args: argparse.Namespace) -> int:
    """Live daemons, runs in progress, queues and receipts awaiting a match."""
    async with ctx.connection() as conn:
        now = await overview.engine_status(conn)
    workers, runs, queues = now.workers, now.runs, now.queues
    print("daemons:")
    print_table(
        ["worker", "roles", "started", "heartbeat"],
        [(w["id"], ",".join(w["roles"]), w["started_at"], w["heartbeat_at"]) for w in workers],
    )
    print("\nruns in progress:")
    print_table(
        ["run", "campaign", "kind", "status", "scheduled for", "counts"],
        [
            (r["id"], r["name"], r["kind"], r["status"], r["scheduled_for"], r["counts"] or None)
            for r in runs
        ],
    )
    print("\nqueues:")
    print_table(
        ["account", "queued", "due now", "oldest due (s)"],
        [
            (q["account"], q["queued"], q["due"], round(q["oldest_due_seconds"] or 0))
            for q in queues
        ],
    )
    print("\nreceipts awaiting a match:")
    print_table(
        ["account", "pending"], [(p["account"], p["pending"]) for p in now.pending_receipts]
    )
    _print_accounts(ctx, now.account_health)
    _print_routes(ctx, now.account_health)
    await _print_balances(ctx)
    return 0


async def _print_balances(ctx: Context) -> None:
    async with aiohttp.ClientSession() as session:
        lines = []
        for name, account in ctx.config.providers.items():
            adapter = adapter_for(name, account, session)
            try:
                async with asyncio.timeout(5):
                    balance = await adapter.balance()
            except (EngineError, TimeoutError, aiohttp.ClientError) as exc:
                lines.append((name, f"unavailable: {exc}"))
                continue
            if balance is not None:
                lines.append((name, str(balance)))
    if lines:
        print("\nprovider balances:")
        print_table(["account", "credits"], lines)


def _print_accounts(ctx: Context, health: Sequence[asyncpg.Record]) -> None:
    """Each configured account up or down, with why (engine.accounts): a paused account's
    messages stay queued, never failed."""
    rows = {r["account"]: r for r in health}
    print("\naccounts:")
    print_table(
        ["account", "state", "reason", "since", "next probe"],
        [_account_row(name, rows.get(name)) for name in ctx.config.providers],
    )


def _print_routes(ctx: Context, health: Sequence[asyncpg.Record]) -> None:
    """Each route with its strategy and its accounts in order, the down ones marked."""
    if not ctx.config.routes:
        return
    down = {r["account"] for r in health if not r["up"]}
    print("\nroutes:")
    print_table(
        ["route", "strategy", "accounts"],
        [
            (
                name,
                route.strategy,
                ", ".join(f"{a} (down)" if a in down else a for a in route.accounts),
            )
            for name, route in ctx.config.routes.items()
        ],
    )


def _account_row(name: str, row: asyncpg.Record | None) -> tuple[Any, ...]:
    if row is None or row["up"]:
        return (name, "up", None, None, None)
    return (name, "down", f"{row['reason']}: {row['detail']}", row["since"], row["retry_at"])


def add_commands(sub: Commands) -> None:
    """``engine run`` and ``engine status``."""
    run = command(sub, "run", run_daemon, "run the daemon (until SIGTERM or SIGINT)")
    run.add_argument(
        "--only", metavar="ROLES", help="a subset of scheduler,dispatcher,webhooks (default: all)"
    )
    command(sub, "status", status, "live daemons, runs, queues, receipts and balances")
