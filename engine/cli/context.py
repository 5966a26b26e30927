"""What every command receives: the parsed options and the configuration, read once.

Every command is an async function ``(ctx, args) -> int`` (:data:`Handler`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from engine import db, migrate, phones
from engine.config import EngineConfig, load_config
from engine.errors import EngineError

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
        return db.database_url(self.config, keep_running=keep_running, on_create=_created)

    def where(self, url: str) -> str:
        """The database as a user knows it: the embedded one's folder, else the URL."""
        if db.uses_embedded(self.config):
            return str((self.config.data_dir / "pgdata").resolve())
        return db.redact(url)

    @asynccontextmanager
    async def connection(self, *, migrated: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """One database connection for a short command (on a migrated database)."""
        url = self.database_url()
        conn = await db.connect(url)
        try:
            if migrated:
                await migrate.require_current(conn, where=self.where(url))
            yield conn
        finally:
            await conn.close()


def _created(pgdata: Path) -> None:
    # a command run outside the project's folder creates an empty database: say so
    print(
        f"engine: created a new embedded PostgreSQL database in {pgdata} (no database_url"
        " in engine.yaml, no $DATABASE_URL)",
        file=sys.stderr,
        flush=True,
    )


def number(ctx: Context, raw: str, region: str | None = None) -> str:
    """A typed phone number in E.164, or a one-line error."""
    phone = phones.normalise(raw, region or ctx.config.default_region)
    if phone is None:
        raise EngineError(f"not a valid phone number: {raw!r}")
    return phone
