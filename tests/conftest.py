"""Fixtures shared by every test.

Database tests run on a real PostgreSQL: the server named by ENGINE_TEST_DATABASE_URL,
or else an embedded one started for this test run. The migrations are applied once to a
template database, and each test gets its own copy (CREATE DATABASE ... TEMPLATE), which
is fast and keeps tests independent.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from engine import db, migrate

REPO = Path(__file__).resolve().parent.parent


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A maintenance URL on the test server (system or embedded)."""
    external = os.environ.get("ENGINE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="engine-test-pg-") as tmp:
        server = db.start_server(Path(tmp) / "pgdata", "delete", {})
        yield str(server.get_uri())
        server.cleanup()


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def template_db(server_url: str) -> AsyncIterator[str]:
    """A database with every migration applied, to be cloned per test."""
    name = f"engine_tpl_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    conn = await db.connect(with_database(server_url, name))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    yield name
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database with no tables at all."""
    name = f"engine_test_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database for one test."""
    name = f"engine_test_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, with the engine's codecs."""
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this test's database."""
    async with db.pool(database_url, min_size=1, max_size=4) as created:
        yield created


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp client session for a test."""
    async with aiohttp.ClientSession() as created:
        yield created
