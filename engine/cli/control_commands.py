"""``engine campaign pause|resume|cancel``: the command line of :mod:`engine.control`.

Pause and cancel record who asked (the login name, ``(cli)``) in the run's reason.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from decimal import Decimal

import aiohttp

from engine import campaigns, control
from engine.cli.context import Context
from engine.cli.output import cell
from engine.cli.parsing import Commands, command
from engine.errors import EngineError
from engine.providers import adapter_for


def _who() -> str:
    return f"{getpass.getuser()} (cli)"


def _ended(name: str, status: str, verb: str, runs: int) -> str | None:
    """What pause or resume did to a campaign that fires no more, or None when the usual
    line says it: a finished one-off's run is paused and resumed as any other, but a
    cancelled campaign stays cancelled (only runs asked for by name since can be in
    progress), and with no run at all there is nothing to do."""
    if status not in ("finished", "cancelled"):
        return None
    if not runs:
        raise EngineError(f"{name} is {status}; there is nothing to {verb}")
    if status == "finished":
        return None
    done = "in progress paused" if verb == "pause" else "continue"
    return f"{name}: {runs} run(s) {done}; the campaign stays {status}"


async def campaign_pause(ctx: Context, args: argparse.Namespace) -> int:
    """Pause a campaign and its runs in progress."""
    async with ctx.connection() as conn:
        before, rows = await control.pause_campaign(conn, args.name, _who())
    print(
        _ended(args.name, before, "pause", len(rows))
        or f"{args.name}: paused ({len(rows)} run(s) in progress paused)"
    )
    return 0


async def campaign_resume(ctx: Context, args: argparse.Namespace) -> int:
    """Resume a paused campaign and its runs; re-check the budget of an over-budget run."""
    async with ctx.connection() as conn:
        before, rows = await control.resume_campaign(conn, args.name)
    async with ctx.connection() as conn, aiohttp.ClientSession() as session:
        requeued = await campaigns.resume_over_budget(
            conn, args.name, lambda account: _balance_of(ctx, session, account)
        )
    # a one-off stopped over budget has finished firing: its run is what resume is for
    if requeued is None and (ended := _ended(args.name, before, "resume", len(rows))):
        print(ended)
    elif rows or requeued is None:
        print(f"{args.name}: resumed ({len(rows)} run(s) continue)")
    if requeued is not None and requeued.newer_firing is not None:
        print(
            f"run {requeued.run_id} stays over budget: the campaign fires anew at "
            f"{cell(requeued.newer_firing)} with the budget as applied"
        )
    elif requeued is not None:
        print(f"run {requeued.run_id}: within budget now, {requeued.messages} messages queued")
    return 0


async def _balance_of(ctx: Context, session: aiohttp.ClientSession, account: str) -> Decimal | None:
    """The account's credit balance, or None when unknown or unreadable (as the expander)."""
    if account not in ctx.config.providers:
        return None
    adapter = adapter_for(account, ctx.config.providers[account], session)
    try:
        async with asyncio.timeout(5):
            return await adapter.balance()
    except (EngineError, TimeoutError, aiohttp.ClientError):
        return None


async def campaign_cancel(ctx: Context, args: argparse.Namespace) -> int:
    """Cancel a campaign: no more firings; unsent messages of its runs are cancelled."""
    async with ctx.connection() as conn:
        _, [row] = await control.cancel_campaign(conn, args.name, _who())
    print(f"{args.name}: cancelled ({row['runs']} run(s), {row['messages']} unsent messages)")
    return 0


def add_commands(campaign: Commands) -> None:
    """``engine campaign pause|resume|cancel NAME``."""
    for name, handler, text in (
        ("pause", campaign_pause, "pause a campaign and its runs (takes effect within a second)"),
        ("resume", campaign_resume, "resume a paused campaign and its runs"),
        ("cancel", campaign_cancel, "cancel a campaign; its unsent messages are cancelled"),
    ):
        command(campaign, name, handler, text).add_argument("name")
