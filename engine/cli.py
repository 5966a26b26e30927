"""The ``engine`` command line.

Every command is an async function ``(ctx, args) -> int``. Errors the engine raises on
purpose (:class:`engine.errors.EngineError`) print as one line on stderr with a non-zero
exit code; ``--debug`` adds the traceback. Configuration is read once, here, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine import __version__, db, migrate
from engine.config import EngineConfig, load_config
from engine.errors import EngineError, NotBuiltError

log = logging.getLogger(__name__)

Handler = Callable[["Context", argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass
class Context:
    """What every command may need: the parsed options and the configuration, read once."""

    args: argparse.Namespace
    _config: EngineConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> EngineConfig:
        """engine.yaml (or the defaults), loaded on first use."""
        if self._config is None:
            self._config = load_config(self.args.config)
        return self._config

    def database_url(self, *, keep_running: bool = False) -> str:
        """The database URL in use (starting the embedded server if needed)."""
        return db.database_url(self.config, keep_running=keep_running)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One database connection for a short command."""
        conn = await db.connect(self.database_url())
        try:
            yield conn
        finally:
            await conn.close()


# --- db -------------------------------------------------------------------------------


async def db_migrate(ctx: Context, args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    async with ctx.connection() as conn:
        applied = await migrate.migrate(conn)
    if not applied:
        print("database is up to date")
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    return 0


async def db_status(ctx: Context, args: argparse.Namespace) -> int:
    """List applied and pending migrations."""
    async with ctx.connection() as conn:
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


# --- the parser -----------------------------------------------------------------------


def not_built(what: str) -> Handler:
    """A command that a later piece of work provides."""

    async def handler(ctx: Context, args: argparse.Namespace) -> int:
        raise NotBuiltError(f"'engine {what}' is not built yet")

    return handler


def _group(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
           help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="engine", description="SMS campaign engine: YAML campaigns to delivery outcomes."
    )
    parser.add_argument("--config", metavar="PATH", help="engine.yaml to use")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dbs = _group(sub, "db", "database: migrate, status, url, stop")
    _command(dbs, "migrate", db_migrate, "apply pending migrations")
    _command(dbs, "status", db_status, "list applied and pending migrations")
    _command(dbs, "url", db_url, "print the connection URL in use (for psql)")
    _command(dbs, "stop", db_stop, "stop the embedded PostgreSQL server")

    contacts = _group(sub, "contacts", "contacts: import, suppress, unsuppress")
    _command(contacts, "import", not_built("contacts import"), "import contacts from CSV")
    groups = _group(sub, "groups", "contact groups")
    _command(groups, "list", not_built("groups list"), "list groups and their sizes")

    campaign = _group(sub, "campaign", "campaigns: validate, preview, apply, list, ...")
    for name in ("validate", "preview", "apply", "list", "send", "runs", "test",
                 "pause", "resume", "cancel"):
        _command(campaign, name, not_built(f"campaign {name}"), f"campaign {name}")

    sms = _group(sub, "sms", "SMS text analysis")
    _command(sms, "analyze", not_built("sms analyze"), "encoding, segments and cost of a text")

    _command(sub, "run", not_built("run"), "run the daemon")
    _command(sub, "status", not_built("status"), "live daemons, runs and queues")
    _command(sub, "report", not_built("report"), "delivery outcomes per campaign and run")
    _command(sub, "export", not_built("export"), "export one row per recipient to CSV")
    _command(sub, "demo", not_built("demo"), "run a whole campaign on the simulator")
    _command(sub, "simulator", not_built("simulator"), "serve the provider simulator")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``engine`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx = Context(args)
    try:
        handler: Handler = args.handler
        return asyncio.run(handler(ctx, args))
    except EngineError as exc:
        if args.debug:
            raise
        print(f"engine: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
