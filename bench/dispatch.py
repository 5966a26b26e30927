"""Benchmark the dispatcher against the physical limit on this machine.

``python bench/dispatch.py [--n 200000] [--database-url URL] [--concurrency 32]``

For a single-send and a bulk simulator account it measures, in the same run:

1. the raw limit: a bare aiohttp loop posting the same requests to the same simulator,
   with the same concurrency, and no database;
2. the engine: N queued messages (one expanded run) sent by the dispatcher with no rate
   limit, results recorded in PostgreSQL;

and prints messages per second for both and the ratio. The simulator runs in its own
process (as a real provider would be elsewhere), posting no receipts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
from common import Simulator, fresh_database, peak_rss_mib

from engine import campaigns, db, scheduler
from engine.config import EngineConfig
from engine.dispatcher import Dispatcher
from engine.expander import Expander
from engine.providers import adapter_for
from engine.spec import Campaign

FILL = """
INSERT INTO contacts (phone, first_name)
SELECT '+2782' || lpad((1000000 + i * 3 + 1)::text, 7, '0'), 'Name' || i
  FROM generate_series(1, $1) AS i;
INSERT INTO groups (name) VALUES ('all');
INSERT INTO group_members (group_id, contact_id) SELECT 1, id FROM contacts;
"""


async def raw_limit(url: str, n: int, batch: int, concurrency: int) -> float:
    """Messages per second of a bare aiohttp client posting the simulator's requests."""
    path = "/sim/v1/messages/bulk" if batch > 1 else "/sim/v1/messages"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    requests = (n + batch - 1) // batch
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if batch > 1:
                body = {
                    "messages": [
                        {
                            "to": f"+2783{(i * batch + k):07d}",
                            "body": "Hi there",
                            "reference": str(i * batch + k),
                        }
                        for k in range(batch)
                    ]
                }
            else:
                body = {"to": f"+2783{i:07d}", "body": "Hi there", "reference": str(i)}
            async with session.post(url + path, data=orjson.dumps(body), headers=headers) as r:
                orjson.loads(await r.read())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def engine_rate(url: str, sim_url: str, n: int, bulk: bool, concurrency: int) -> float:
    account = {
        "type": "simulator",
        "base_url": sim_url,
        "rate": 1_000_000,
        "concurrency": concurrency,
        "bulk": bulk,
        "batch_size": 100,
    }
    config = EngineConfig.model_validate({"providers": {"sim": account}})
    spec = Campaign.from_spec(
        {
            "name": "bench",
            "provider": "sim",
            "schedule": {"now": True},
            "audience": {"groups": ["all"]},
            "message": {"body": "Hi {{ first_name }}"},
        }
    )
    conn = await db.connect(url)
    await conn.execute(FILL.replace("$1", str(n)))
    now = datetime.now(UTC)
    await campaigns.apply_campaign(conn, spec, Path("bench.yaml"), config, now=now)
    await scheduler.create_due_runs(conn, now, timedelta(hours=1))
    async with db.pool(url, min_size=2, max_size=6) as pool:
        await Expander(pool, config, "bench").run_once()
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            dispatcher = Dispatcher(
                pool, config, "bench", {"sim": adapter_for("sim", config.providers["sim"], session)}
            )
            started = time.perf_counter()
            await dispatcher.drain()
            elapsed = time.perf_counter() - started
    sent = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
    await conn.close()
    assert sent == n, f"only {sent} of {n} sent"
    return n / elapsed


async def measure(args: argparse.Namespace, sim_url: str) -> None:
    print(f"{'account':<8} {'raw aiohttp msg/s':>18} {'engine msg/s':>14} {'ratio':>7}")
    for bulk in (False, True):
        n = args.n
        raw = await raw_limit(sim_url, n, 100 if bulk else 1, args.concurrency)
        async with fresh_database(args.database_url, "dispatch") as url:
            rate = await engine_rate(url, sim_url, n, bulk, args.concurrency)
        print(f"{'bulk' if bulk else 'single':<8} {raw:>18,.0f} {rate:>14,.0f} {rate / raw:>7.0%}")
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    sim = Simulator(None, args.port)
    try:
        asyncio.run(measure(args, sim.url))
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
