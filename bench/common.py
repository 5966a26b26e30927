"""What the benchmarks share: a fresh migrated database, the simulator in a process of
its own, and peak memory."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import db, migrate
from engine.simulator import FamilySettings, SimulatorSettings, serve

SECRET = "bench-secret-0123456789"


@asynccontextmanager
async def fresh_database(server_url: str | None, label: str) -> AsyncIterator[str]:
    """A new, migrated database on ``server_url``, or on an embedded server; dropped after."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-pg-") as tmp:
        server = None
        if server_url is None:
            server = db.start_server(Path(tmp) / "pgdata", "delete", {})
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


def free_port() -> int:
    """A free local port; the tests' own copy is tests/net.py (bench does not import tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_simulator(port: int, webhook_url: str | None, ready: Any) -> None:
    """The simulator in a process of its own (receipts to ``webhook_url`` when given).

    With receipts it also rejects numbers ending 0000, a realistic share of failures;
    without (the limit and the peer), it accepts everything.
    """

    async def main() -> None:
        family = FamilySettings(
            webhook_url=webhook_url,
            webhook_secret=SECRET,
            delivered=0.9,
            undelivered=0.05,
            receipt_delay=(0.0, 0.5),
            duplicates=0.05,
            out_of_order=0.05,
            reject_suffixes=("0000",) if webhook_url else (),
        )
        await serve(
            SimulatorSettings(seed=1, default=family, max_pending_receipts=50_000, post_workers=16),
            "127.0.0.1",
            port,
        )
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class Simulator:
    """A simulator process (as a real provider would be elsewhere), stopped by ``stop``."""

    def __init__(self, webhook_url: str | None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ready = multiprocessing.Event()
        self.proc = multiprocessing.Process(
            target=run_simulator, args=(self.port, webhook_url, ready), daemon=True
        )
        self.proc.start()
        if not ready.wait(30):
            raise SystemExit("the simulator did not start")

    async def stats(self, numbers: bool = True) -> dict[str, Any]:
        url = f"{self.url}/sim/stats" + ("" if numbers else "?numbers=0")
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            stats: dict[str, Any] = await resp.json()
            return stats

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join()
