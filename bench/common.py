"""What the benchmarks share: a fresh migrated database, and peak memory."""

from __future__ import annotations

import resource
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import db, migrate


@asynccontextmanager
async def fresh_database(server_url: str | None, label: str) -> AsyncIterator[str]:
    """A new, migrated database on ``server_url``, or on an embedded server; dropped after."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-pg-") as tmp:
        server = None
        if server_url is None:
            server = db._pgserver().get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
            server_url = str(server.get_uri())
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        try:
            conn = await db.connect(url)
            await migrate.migrate(conn)
            await conn.close()
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
            if server is not None:
                server.cleanup()


def peak_rss_mib() -> float:
    """This process's peak resident memory, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
