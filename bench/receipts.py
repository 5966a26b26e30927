"""Benchmark the receipt path: webhook calls over HTTP to durable rows to applied statuses.

``python bench/receipts.py [--n 200000] [--per-post 1] [--clients 64] [--every 0.5]
[--database-url URL]``

One run with N sent messages is written to a fresh database. The webhook server (the
engine's WebhookHandler and ReceiptWriter, mounted as the daemon mounts them) runs in a
process of its own; clients in another process post one receipt per message, in the
simulator's webhook format, ``--per-post`` receipts per call, over ``--clients`` keep-alive
connections. Three phases:

1. raw: the same calls to a bare aiohttp app that answers 200 and does nothing (the HTTP
   limit of this machine, for scale);
2. backlog: the calls with no reconciler running (receipts acknowledged durably per
   second: a 2xx is only sent after the COMMIT), then the Reconciler applies the whole
   backlog (applied per second);
3. live: the Reconciler runs in the server process every ``--every`` seconds, as the
   daemon's timer runs it; acknowledged and applied per second, and the end-to-end lag
   from posting to the applied status (p50, p95; from the timestamps in the database).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from common import fresh_database, peak_rss_mib

from engine import db
from engine.config import EngineConfig
from engine.providers import adapter_for
from engine.receipt_writer import ReceiptWriter
from engine.reconciler import Reconciler
from engine.webhooks import WebhookHandler

SECRET = "bench-secret"

FILL = """
INSERT INTO campaigns (name, spec, spec_hash) VALUES ('bench', '{}', 'h');
INSERT INTO campaign_runs (campaign_id, scheduled_for, status, spec)
SELECT id, now(), 'sending', '{}' FROM campaigns;
INSERT INTO messages (run_id, phone, account, status, provider_message_id, sent_at, segments)
SELECT 1, '+2782' || lpad(i::text, 7, '0'), 'sim', 'sent', 'sim-' || i,
       now() - interval '1 second', 1
  FROM generate_series(1, {n}) AS i;
ANALYZE messages;
"""

STATUSES = ("delivered",) * 18 + ("undelivered", "failed")


# --- the server process -------------------------------------------------------------------


def run_server(
    url: str | None, port: int, mode: str, every: float, flush: float, ready: EventType
) -> None:
    """A webhook server in a process of its own, until killed.

    ``raw``: a bare aiohttp app answering 200; ``backlog``: the engine's handler and
    writer; ``live``: those, and the Reconciler every ``every`` seconds.
    """
    asyncio.run(_serve(url, port, mode, every, flush, ready))


async def _serve(
    url: str | None, port: int, mode: str, every: float, flush: float, ready: EventType
) -> None:
    app = web.Application()
    if url is None:
        app.router.add_post("/webhooks/{account}", _bare)
        await _listen(app, port)
        ready.set()
        await asyncio.Event().wait()
    config = EngineConfig.model_validate(
        {"providers": {"sim": {"type": "simulator", "webhook_secret": SECRET}}}
    )
    async with db.pool(url, min_size=2, max_size=6) as pool, aiohttp.ClientSession() as session:
        adapters = {n: adapter_for(n, a, session) for n, a in config.providers.items()}
        writer = ReceiptWriter(pool, flush_interval=flush)
        await writer.start()
        app.add_routes(WebhookHandler(adapters, writer).routes())
        await _listen(app, port)
        ready.set()
        if mode == "live":
            await reconcile_forever(Reconciler(pool), every)
        await asyncio.Event().wait()


async def _bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _listen(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()


async def reconcile_forever(reconciler: Reconciler, every: float) -> None:
    """Apply pending receipts every ``every`` seconds, as the daemon's timer does."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await reconciler.apply_pending()
        await asyncio.sleep(max(0.0, started + every - loop.time()))


# --- the client process -------------------------------------------------------------------


def run_clients(
    port: int, n: int, per_post: int, clients: int, results: multiprocessing.Queue[Any]
) -> None:
    """Post n receipts, per_post per call, over ``clients`` keep-alive connections.

    A minimal HTTP/1.1 client on asyncio streams: on a 2-core machine every cycle the
    client spends is taken from the server, and aiohttp's client costs about twice as much.
    Every answer is read and its status checked.
    """

    async def main() -> dict[str, Any]:
        calls = iter(range(0, n, per_post))
        failures = 0

        async def worker() -> None:
            nonlocal failures
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for first in calls:
                writer.write(_request(first, min(first + per_post, n)))
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
                failures += not head.startswith(b"HTTP/1.1 200")
            writer.close()
            await writer.wait_closed()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return {"elapsed": time.perf_counter() - started, "failures": failures}

    results.put(asyncio.run(main()))


def _request(first: int, last: int) -> bytes:
    """One webhook call carrying receipts first+1..last, stamped with the time of posting."""
    at = datetime.now(UTC).isoformat()
    body = orjson.dumps(
        {
            "events": [
                {
                    "id": f"e{i}",
                    "message_id": f"sim-{i}",
                    "reference": None,
                    "status": STATUSES[i % len(STATUSES)],
                    "code": None,
                    "detail": None,
                    "at": at,
                }
                for i in range(first + 1, last + 1)
            ]
        }
    )
    return (
        b"POST /webhooks/sim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nX-Webhook-Secret: "
        + SECRET.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# --- the phases ---------------------------------------------------------------------------


def post_all(url: str | None, args: argparse.Namespace, mode: str) -> float:
    """Start the server, post everything from the client process; receipts per second."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(
        target=run_server,
        daemon=True,
        args=(url, args.port, mode, args.every, args.flush_interval, ready),
    )
    server.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the webhook server did not start")
        results: multiprocessing.Queue[Any] = ctx.Queue()
        client = ctx.Process(
            target=run_clients, args=(args.port, args.n, args.per_post, args.clients, results)
        )
        client.start()
        figures: dict[str, Any] = results.get()
        client.join()
        if figures["failures"]:
            raise SystemExit(f"{figures['failures']} calls were not answered 200")
        if mode == "live" and url is not None:
            asyncio.run(wait_applied(url))
    finally:
        server.terminate()
        server.join()
    return float(args.n / figures["elapsed"])


async def wait_applied(url: str) -> None:
    """Wait until the live reconciler has applied every receipt."""
    conn = await db.connect(url)
    while True:
        if not await conn.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL"):
            break
        await asyncio.sleep(0.1)
    await conn.close()


async def prepare(url: str, n: int) -> None:
    conn = await db.connect(url)
    await conn.execute(FILL.replace("{n}", str(n)))
    await conn.close()


async def check(url: str, n: int) -> dict[str, Any]:
    """Every receipt stored and applied; the applied span and the lag, from the database."""
    conn = await db.connect(url)
    row = await conn.fetchrow("""
        SELECT count(*) AS stored,
               count(*) FILTER (WHERE outcome = 'applied') AS applied,
               extract(epoch FROM max(applied_at) - min(received_at)) AS span,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM applied_at - occurred_at)) AS p50,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM applied_at - occurred_at)) AS p95
          FROM receipts""")
    final = await conn.fetchval("SELECT count(*) FROM messages WHERE status <> 'sent'")
    await conn.close()
    assert row["stored"] == n and row["applied"] == n and final == n, (dict(row), final)
    return dict(row)


async def backlog_rate(url: str, n: int) -> float:
    async with db.pool(url, min_size=1, max_size=2) as pool:
        started = time.perf_counter()
        await Reconciler(pool).apply_pending()
        return n / (time.perf_counter() - started)


async def raw(args: argparse.Namespace) -> None:
    rate = await asyncio.to_thread(post_all, None, args, "raw")
    print(f"raw:     bare aiohttp app, no work  {rate:>8,.0f} receipts/s")


async def backlog(args: argparse.Namespace) -> None:
    async with fresh_database(args.database_url, "receipts") as url:
        await prepare(url, args.n)
        acked = await asyncio.to_thread(post_all, url, args, "backlog")
        applied = await backlog_rate(url, args.n)
        await check(url, args.n)
    print(
        f"backlog: acknowledged durably       {acked:>8,.0f} receipts/s; "
        f"then applied {applied:>8,.0f} receipts/s"
    )


async def live(args: argparse.Namespace) -> None:
    async with fresh_database(args.database_url, "receipts") as url:
        await prepare(url, args.n)
        acked = await asyncio.to_thread(post_all, url, args, "live")
        row = await check(url, args.n)
    print(
        f"live:    acknowledged durably       {acked:>8,.0f} receipts/s; "
        f"applied {args.n / row['span']:>8,.0f} receipts/s; post→applied "
        f"p50 {row['p50'] * 1000:,.0f} ms, p95 {row['p95'] * 1000:,.0f} ms "
        f"(reconciler every {args.every:g} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--per-post", type=int, default=1)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--every",
        type=float,
        default=0.5,
        help="seconds between reconciler passes in the live phase",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=0.005,
        help="the writer's group-commit window, seconds",
    )
    parser.add_argument("--phases", default="raw,backlog,live")
    parser.add_argument("--port", type=int, default=18091)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    print(f"{args.n:,} receipts, {args.per_post} per call, {args.clients} keep-alive connections")
    phases = {"raw": raw, "backlog": backlog, "live": live}
    for name in args.phases.split(","):
        asyncio.run(phases[name](args))
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
