"""Benchmark the tracked-link redirect: redirects per second under concurrent clicks, and
how long until every click is durable in ``link_clicks``.

``python bench/clicks.py [--n 20000] [--codes 5000] [--concurrency 200] [--database-url URL]``

Makes ``--codes`` messages with one tracked link each (expanded by the engine), serves
``/l/{code}`` as the daemon does (engine.link_redirect on an aiohttp listener), and fires
``--n`` GETs at ``--concurrency`` at once from one aiohttp client in the same process (the
client's own CPU counts against the figure). It reports redirects per second, the
latency percentiles of the redirect, and the time from the last redirect until the click
writer had stored every click.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from common import fresh_database

from engine import campaigns, db, scheduler
from engine.config import EngineConfig
from engine.expander import Expander
from engine.link_redirect import ClickWriter, LinkRedirect
from engine.spec import Campaign

FILL = """
INSERT INTO contacts (phone) SELECT '+2782' || lpad((1000000 + i)::text, 7, '0')
  FROM generate_series(1, $1) AS i;
INSERT INTO groups (name) VALUES ('all');
INSERT INTO group_members (group_id, contact_id) SELECT 1, id FROM contacts;
"""
SPEC = {
    "name": "clicks",
    "provider": "simulator",
    "schedule": {"now": True},
    "audience": {"groups": ["all"]},
    "message": {"body": "Sale today https://shop.example.com/spring?ref=sms"},
    "links": {"track": True, "base_url": "https://s.example.com"},
}


async def run(args: argparse.Namespace) -> None:
    async with fresh_database(args.database_url, "clicks") as url:
        conn = await db.connect(url)
        await conn.execute(FILL.replace("$1", str(args.codes)))
        config, now = EngineConfig(), datetime.now(UTC)
        spec = Campaign.from_spec(SPEC)
        await campaigns.apply_campaign(conn, spec, Path("c.yaml"), config, now=now)
        await scheduler.create_due_runs(conn, now, timedelta(hours=1))
        async with db.pool(url, min_size=2, max_size=12) as pool:
            await Expander(pool, config, "bench").run_once()
            codes = [r["code"] for r in await conn.fetch("SELECT code FROM link_codes")]
            clicks = ClickWriter(pool)
            await clicks.start()
            app = web.Application()
            app.add_routes(LinkRedirect(pool, clicks).routes())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            latencies: list[float] = []
            gate = asyncio.Semaphore(args.concurrency)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def click(i: int) -> None:
                    async with gate:
                        started = time.perf_counter()
                        target = f"http://{host}:{port}/l/{codes[i % len(codes)]}"
                        async with session.get(target, allow_redirects=False) as response:
                            assert response.status == 302
                        latencies.append(time.perf_counter() - started)

                started = time.perf_counter()
                await asyncio.gather(*(click(i) for i in range(args.n)))
                elapsed = time.perf_counter() - started
            done = time.perf_counter()
            for _ in range(6000):  # until every click is stored (at most 5 minutes)
                if await conn.fetchval("SELECT count(*) FROM link_clicks") >= args.n:
                    break
                await asyncio.sleep(0.05)
            durable = time.perf_counter() - done
            await clicks.stop()
            await runner.cleanup()
        await conn.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"{args.n:,} redirects over {len(codes):,} codes at concurrency {args.concurrency}: "
        f"{args.n / elapsed:,.0f}/s; latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    print(f"every click durable {durable:.2f}s after the last redirect")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--codes", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
