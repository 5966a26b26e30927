"""Benchmark ``engine db prune`` beside a sending daemon: does a big prune stall sending?

``python bench/prune.py [--old 1000000] [--n 50000] [--database-url URL]``

On a fresh database: an old completed run of ``--old`` messages with one receipt each, aged
past the cutoff. Then two runs of ``--n`` messages are sent through the simulator by the
dispatcher (no rate limit), the first alone and the second while ``prune`` deletes the old
run. It prints the prune's rows/s, and for both sends the rate and the longest gap between
two consecutive sends: a prune that stalled the claim would show as a long gap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from common import Simulator, fresh_database

from engine import campaigns, db, prune, scheduler
from engine.config import EngineConfig
from engine.dispatcher import Dispatcher
from engine.expander import Expander
from engine.providers import adapter_for
from engine.spec import Campaign

OLD = """
INSERT INTO campaigns (name, spec, spec_hash, status) VALUES ('old', '{}', 'x', 'finished');
INSERT INTO campaign_runs (campaign_id, scheduled_for, status, finished_at)
SELECT id, now() - interval '200 days', 'completed', now() - interval '200 days'
  FROM campaigns WHERE name = 'old';
INSERT INTO messages (run_id, phone, account, body, encoding, segments, cost, status,
                      sent_at, delivered_at, provider_message_id)
SELECT r.id, '+2783' || lpad(i::text, 7, '0'), 'sim', 'Hi there', 'GSM-7', 1, 1, 'delivered',
       now() - interval '200 days', now() - interval '200 days', 'old-' || i
  FROM campaign_runs r, generate_series(1, $1) AS i WHERE r.status = 'completed';
INSERT INTO receipts (account, provider_message_id, status, raw, received_at, applied_at,
                      outcome)
SELECT 'sim', 'old-' || i, 'delivered', '{}', now() - interval '200 days',
       now() - interval '200 days', 'applied'
  FROM generate_series(1, $1) AS i;
INSERT INTO contacts (phone, first_name)
SELECT '+2782' || lpad((1000000 + i * 3 + 1)::text, 7, '0'), 'Name' || i
  FROM generate_series(1, $2) AS i;
INSERT INTO groups (name) VALUES ('all');
INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c;
"""

GAPS = """
SELECT count(*) AS sent, extract(epoch FROM max(sent_at) - min(sent_at)) AS span,
       extract(epoch FROM max(gap)) AS longest_gap
  FROM (SELECT sent_at, sent_at - lag(sent_at) OVER (ORDER BY sent_at) AS gap
          FROM messages WHERE run_id = $1 AND sent_at IS NOT NULL) g
"""


async def send_run(
    url: str, pool: asyncpg.Pool, config: EngineConfig, name: str, session: aiohttp.ClientSession
) -> int:
    """Apply, expand and send one campaign to the whole group; return its run id."""
    conn = await db.connect(url)
    spec = Campaign.from_spec(
        {
            "name": name,
            "provider": "sim",
            "schedule": {"now": True},
            "audience": {"groups": ["all"]},
            "message": {"body": "Hi {{ first_name }}"},
        }
    )
    now = datetime.now(UTC)
    await campaigns.apply_campaign(conn, spec, Path("bench.yaml"), config, now=now)
    await scheduler.create_due_runs(conn, now, timedelta(hours=1))
    await Expander(pool, config, "bench").run_once()
    run_id: int = await conn.fetchval(
        "SELECT r.id FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id"
        " WHERE c.name = $1",
        name,
    )
    await conn.close()
    adapters = {"sim": adapter_for("sim", config.providers["sim"], session)}
    await Dispatcher(pool, config, "bench", adapters).drain()
    return run_id


async def measure(args: argparse.Namespace, sim_url: str) -> None:
    account = {"type": "simulator", "base_url": sim_url, "rate": 1_000_000, "concurrency": 32}
    config = EngineConfig.model_validate({"providers": {"sim": account}})
    async with fresh_database(args.database_url, "prune") as url:
        conn = await db.connect(url)
        started = time.perf_counter()
        await conn.execute(OLD.replace("$1", str(args.old)).replace("$2", str(args.n)))
        print(
            f"filled {args.old:,} old messages and receipts in {time.perf_counter() - started:.0f}s"
        )
        await conn.execute("VACUUM ANALYZE")
        async with (
            db.pool(url, min_size=2, max_size=8) as pool,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session,
        ):
            alone = await send_run(url, pool, config, "alone", session)
            prune_started = time.perf_counter()
            pruning = asyncio.create_task(prune.prune(conn, datetime.now(UTC) - timedelta(days=90)))
            await asyncio.sleep(0.5)  # the prune is under way before sending starts
            beside = await send_run(url, pool, config, "beside", session)
            done = await pruning
            took = time.perf_counter() - prune_started
        for label, run_id in (("alone", alone), ("beside the prune", beside)):
            row = await conn.fetchrow(GAPS, run_id)
            rate = row["sent"] / max(float(row["span"] or 0), 1e-3)
            print(
                f"send {label:<17}: {row['sent']:,} messages at {rate:,.0f}/s,"
                f" longest gap between two sends {float(row['longest_gap'] or 0) * 1000:.0f} ms"
            )
        print(
            f"prune: {done.messages:,} messages and {done.receipts:,} receipts"
            f" in {took:.1f}s ({(done.messages + done.receipts) / took:,.0f} rows/s)"
        )
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    sim = Simulator(None)
    try:
        asyncio.run(measure(args, sim.url))
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
