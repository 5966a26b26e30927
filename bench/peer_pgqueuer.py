"""The peer: the same messages sent as pgqueuer jobs by a pgqueuer worker with aiohttp.

``python bench/peer_pgqueuer.py [--n 200000] [--database-url URL] [--concurrency 32]``

What a user would write without the engine: one job per message in a PostgreSQL job queue
(pgqueuer, from PyPI: ``pip install -e '.[bench]'``), and a worker whose entrypoint reads
the message, posts it to the provider with aiohttp and records the result with one UPDATE.

On a fresh database (embedded by default, or the server of ``--database-url`` /
``DATABASE_URL``) it installs pgqueuer's schema (and its recommended autovacuum settings)
next to the engine's, inserts N ``queued`` messages of one campaign run as the expander
would leave them, batch-enqueues one job per message (payload: the message id) and
analyzes the queue table (as autovacuum keeps a queue in service analyzed), then drains
it with one ``QueueManager``, timed from the first job started to the queue drained.
It checks that every message ended ``sent`` and that the simulator (in its
own process, no receipts, no rejections) accepted each number exactly once.

pgqueuer is configured as its performance-tuning guide recommends for many short jobs:
a dedicated asyncpg connection for the ``QueueManager`` (its LISTEN channel), shared
resources (an asyncpg pool and an aiohttp session) for the jobs, durable tables with
``pgq autovac`` applied, and drain mode to stop once the queue is empty. The provider sees
at most ``--concurrency`` requests at once, as from the engine: each job holds one of
``--concurrency`` pooled connections and the aiohttp connector has as many. pgqueuer's own
knobs were swept on this machine (``batch_size`` 16-128, ``max_concurrent_tasks`` 32-256,
or an entrypoint ``concurrency_limit`` instead): its best is a dequeue batch of
``--concurrency`` and ``max_concurrent_tasks`` of four times that. A job counts against
the cap until its completion is logged (a batched write), so a cap equal to the provider
concurrency starves the HTTP side (about 2/3 of the rate).

``peer_rate`` is what ``bench/e2e.py`` calls to compare in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import aiohttp
import asyncpg
import orjson
from common import Simulator, fresh_database, peak_rss_mib
from pgqueuer import PgQueuer
from pgqueuer.models import Context, Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "send_sms"
ENQUEUE_CHUNK = 10_000  # jobs per Queries.enqueue call (one INSERT ... UNNEST each)
HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}

# the engine's messages after expansion of "Hi {{ first_name }}" for a group of N contacts;
# numbers of their own (+2784...) so a shared simulator's counts tell this run apart
FILL = """
INSERT INTO contacts (phone, first_name)
SELECT '+2784' || lpad((1000000 + i * 3 + 1)::text, 7, '0'), 'Name' || i
  FROM generate_series(1, {n}) AS i;
INSERT INTO campaigns (name, spec, spec_hash, source_path)
VALUES ('peer', '{{"name": "peer"}}', 'peer', 'peer.yaml');
INSERT INTO campaign_runs (campaign_id, scheduled_for, kind, status, recipients,
                           started_at, expanded_at)
SELECT id, now(), 'manual', 'sending', {n}, now(), now() FROM campaigns;
INSERT INTO messages (run_id, contact_id, phone, account, body, encoding, segments, cost,
                      status, next_attempt_at, expires_at)
SELECT r.id, c.id, c.phone, 'sim', 'Hi ' || c.first_name, 'GSM-7', 1, 0.0100,
       'queued', now(), now() + interval '1 day'
  FROM campaign_runs r CROSS JOIN contacts c;
"""


def peer_config(concurrency: int) -> dict[str, Any]:
    """How pgqueuer is run for ``concurrency`` requests in flight to the provider."""
    return {
        "pgqueuer": version("pgqueuer"),
        "driver": "AsyncpgDriver (dedicated connection for the QueueManager)",
        "pool_size": concurrency,  # the jobs' connections, one held per job
        "batch_size": concurrency,  # jobs per dequeue
        "max_concurrent_tasks": 4 * concurrency,  # jobs picked by this worker at once
        "concurrency_limit": 0,  # no per-entrypoint (fleet-wide) cap
        "mode": "drain",
        "durability": "durable",
        "autovacuum": "pgq autovac",
        "http": f"aiohttp, TCPConnector(limit={concurrency})",
    }


async def _prepare(url: str, n: int) -> list[int]:
    """Messages queued as after expansion, and pgqueuer's schema; the message ids."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FILL.format(n=n))
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        await queries.optimize_autovacuum()
        return [r["id"] for r in await conn.fetch("SELECT id FROM messages ORDER BY id")]
    finally:
        await conn.close()


async def _enqueue(url: str, ids: list[int]) -> float:
    """One job per message, in batches; jobs per second."""
    conn = await asyncpg.connect(url)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        started = time.perf_counter()
        for i in range(0, len(ids), ENQUEUE_CHUNK):
            chunk = ids[i : i + ENQUEUE_CHUNK]
            await queries.enqueue(
                [ENTRYPOINT] * len(chunk), [str(m).encode() for m in chunk], [0] * len(chunk)
            )
        rate = len(ids) / (time.perf_counter() - started)
        # A queue in service has statistics (autovacuum analyzes it); a table bulk-loaded a
        # moment ago has none, and pgqueuer's dequeue then costs time in proportion to the
        # queue (~80 ms per batch at 100,000 jobs instead of ~5 ms).
        await conn.execute("ANALYZE pgqueuer")
        return rate
    finally:
        await conn.close()


async def _sim_counts(session: aiohttp.ClientSession, sim_url: str) -> dict[str, int]:
    async with session.get(sim_url + "/sim/stats") as resp:
        return dict(orjson.loads(await resp.read())["per_number"])


async def _drain(url: str, sim_url: str, concurrency: int) -> float:
    """Run a pgqueuer worker until the queue is empty; seconds from the first job."""
    config = peer_config(concurrency)
    first: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        asyncpg.create_pool(
            url, min_size=config["pool_size"], max_size=config["pool_size"]
        ) as pool,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        listen = await asyncpg.connect(url)
        pgq = PgQueuer.from_asyncpg_connection(listen)
        pgq.qm.resources.update(pool=pool, http=session, sim_url=sim_url)

        @pgq.entrypoint(ENTRYPOINT, concurrency_limit=config["concurrency_limit"])
        async def send_sms(job: Job, ctx: Context) -> None:
            if not first:
                first.append(time.perf_counter())
            db: asyncpg.Pool = ctx.resources["pool"]
            http: aiohttp.ClientSession = ctx.resources["http"]
            message_id = int(job.payload or b"")
            async with db.acquire() as db_conn:
                row = await db_conn.fetchrow(
                    "SELECT phone, body, sender FROM messages WHERE id = $1", message_id
                )
                body = {
                    "to": row["phone"],
                    "body": row["body"],
                    "sender": row["sender"],
                    "reference": str(message_id),
                }
                async with http.post(
                    ctx.resources["sim_url"] + "/sim/v1/messages",
                    data=orjson.dumps(body),
                    headers=HEADERS,
                ) as resp:
                    data = orjson.loads(await resp.read())
                    if resp.status != 200:
                        raise RuntimeError(f"message {message_id}: {resp.status} {data}")
                await db_conn.execute(
                    "UPDATE messages SET status = 'sent', provider_message_id = $2,"
                    " sent_at = now(), attempts = attempts + 1, updated_at = now()"
                    " WHERE id = $1",
                    message_id,
                    data["id"],
                )

        try:
            # the QueueManager alone: no schedules, so no SchedulerManager to stop
            await pgq.qm.run(
                batch_size=config["batch_size"],
                mode=QueueExecutionMode.drain,
                max_concurrent_tasks=config["max_concurrent_tasks"],
            )
            ended = time.perf_counter()
        finally:
            if not listen.is_closed():
                await listen.close()
    if not first:
        raise RuntimeError("pgqueuer ran no job")
    return ended - first[0]


async def _verify(url: str, sim_url: str, before: dict[str, int], n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        sent = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        phones = [r["phone"] for r in await conn.fetch("SELECT phone FROM messages")]
    finally:
        await conn.close()
    assert sent == n, f"only {sent} of {n} messages sent"
    assert left == 0, f"{left} jobs left in the queue"
    async with aiohttp.ClientSession() as session:
        after = await _sim_counts(session, sim_url)
    wrong = [p for p in phones if after.get(p, 0) - before.get(p, 0) != 1]
    assert not wrong, f"{len(wrong)} numbers not received exactly once, e.g. {wrong[:3]}"


async def peer_rate(
    database_url: str | None,
    sim_url: str,
    n: int,
    concurrency: int,
    report: Callable[[str], None] | None = None,
) -> float:
    """Messages per second of the pgqueuer peer on a fresh database; checked, not trusted.

    ``database_url`` is a server (a fresh database is made on it) or None for an embedded
    one; ``sim_url`` a running simulator without rejections. ``report``, if given,
    receives a line about the enqueue.
    """
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    async with fresh_database(database_url, "peer") as url:
        ids = await _prepare(url, n)
        enqueue_rate = await _enqueue(url, ids)
        if report is not None:
            report(f"enqueued {n:,} jobs at {enqueue_rate:,.0f} jobs/s (not timed below)")
        async with aiohttp.ClientSession() as session:
            before = await _sim_counts(session, sim_url)
        elapsed = await _drain(url, sim_url, concurrency)
        await _verify(url, sim_url, before, n)
    return n / elapsed


async def measure(args: argparse.Namespace, sim_url: str) -> None:
    print("pgqueuer peer configuration:")
    for key, value in peer_config(args.concurrency).items():
        print(f"  {key:<22} {value}")
    rate = await peer_rate(
        args.database_url, sim_url, args.n, args.concurrency, report=lambda line: print(f"  {line}")
    )
    print(
        f"pgqueuer peer: {args.n:,} messages, {rate:,.0f} msg/s "
        "(first job started to queue drained; every message sent, each number once)"
    )
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=18095)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    sim = Simulator(None, args.port)
    try:
        asyncio.run(measure(args, sim.url))
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
