"""``engine providers subscribe|check`` and ``engine simulator``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import orjson
from pydantic import ValidationError

from engine import yamldoc
from engine.cli.context import Context
from engine.cli.daemon_commands import stop_on_signals
from engine.cli.parsing import Commands, command, group
from engine.errors import ConfigError, EngineError
from engine.providers import adapter_for
from engine.simulator import SimulatorSettings, serve


async def providers_subscribe(ctx: Context, args: argparse.Namespace) -> int:
    """Create the provider-side webhook subscription of an account, where it has one."""
    account = ctx.config.providers.get(args.account)
    if account is None:
        raise ConfigError(f"no provider account {args.account!r} in the configuration")
    public_url = ctx.config.webhooks.public_url
    if not public_url:
        raise ConfigError("webhooks.public_url must be set: providers call the engine there")
    async with aiohttp.ClientSession() as session:
        adapter = adapter_for(args.account, account, session, public_url=public_url)
        subscribe = getattr(adapter, "subscribe", None)
        # each line starts with the URL, so a script can take the first word
        if subscribe is None:
            print(
                f"{adapter.webhook_url(public_url)}  ({args.account}: this provider has no"
                " subscription API; set this URL as its callback URL in its dashboard)"
            )
            return 0
        created = await subscribe(public_url)
    print(f"{adapter.webhook_url(public_url)}  ({args.account}: subscribed)")
    print(orjson.dumps(created, option=orjson.OPT_INDENT_2).decode())
    return 0


async def providers_check(ctx: Context, args: argparse.Namespace) -> int:
    """One authenticated read of an account; on success, mark it up for every daemon."""
    from engine.accounts import mark_up
    from engine.providers.base import CheckFailed

    account = ctx.config.providers.get(args.account)
    if account is None:
        raise ConfigError(f"no provider account {args.account!r} in the configuration")
    async with aiohttp.ClientSession() as session:
        adapter = adapter_for(args.account, account, session)
        try:
            said = await adapter.check()
        except CheckFailed as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            raise EngineError(f"{exc}{reason}") from exc
    print(said)
    async with ctx.connection() as conn:
        if await mark_up(conn, args.account):
            print(f"{args.account}: was paused; the daemons resume sending now")
    return 0


async def simulator_serve(ctx: Context, args: argparse.Namespace) -> int:
    """Serve the provider simulator until SIGTERM or Ctrl-C, then stop cleanly (exit 0)."""
    settings = SimulatorSettings()
    if args.settings:
        path = Path(args.settings)
        if not path.is_file():  # a typo is one line, as for every other file argument
            raise ConfigError(f"{path}: no such file")
        doc = yamldoc.load(path)
        try:
            settings = SimulatorSettings.model_validate(doc.data or {})
        except ValidationError as exc:
            raise ConfigError("\n".join(doc.validation_problems(exc))) from exc
    running = await serve(settings, args.host, args.port)
    print(f"simulator listening on {running.url} (stats at {running.url}/sim/stats)", flush=True)
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop):
            await stop.wait()
    finally:
        await running.close()
    return 0


def add_commands(sub: Commands) -> None:
    """``engine providers ...`` and ``engine simulator``."""
    providers = group(sub, "providers", "provider accounts")
    command(
        providers, "subscribe", providers_subscribe, "create the provider-side webhook subscription"
    ).add_argument("account")
    command(
        providers,
        "check",
        providers_check,
        "one authenticated read (balance, token info); resumes a paused account",
    ).add_argument("account")
    simulator = command(sub, "simulator", simulator_serve, "serve the provider simulator")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8090)
    simulator.add_argument(
        "--settings", metavar="FILE", help="YAML simulator settings (faults, receipts per provider)"
    )
