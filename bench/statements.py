"""The hot path's statements alone: what PostgreSQL pays per message, with nothing else running.

``python bench/statements.py [--n 200000] [--database-url URL] [--without-index NAME ...]``

``e2e.py`` measures the whole pipeline, where PostgreSQL shares two cores with the daemon
and the simulator and a statement's time includes waiting for a core. This runs the same
statements one after another on one connection, in the dispatcher's and the webhook
writer's batch sizes, over a fresh database of ``--n`` queued messages:

- ``claim``: ``claim_messages`` (queued -> sending), ``--batch`` at a time;
- ``record``: ``record_results`` (sending -> sent, with the provider's id);
- ``arrival``: :func:`engine.receipt_arrival.store_and_apply` for ``--receipts`` receipts per
  message (the bulk simulator's ``sent`` and then ``delivered``), ``--receipt-batch`` at a
  time: match and lock, apply, insert each receipt once.

For each it prints the time and the backend's own CPU per message (psutil on the server
process; the server must run on this machine), and the WAL it wrote per message. Then how
many of the updates of ``messages`` were HOT. ``--without-index`` drops an index of the
schema first (repeatable): what one index costs, measured instead of guessed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import psutil
from common import fresh_database

from engine import db
from engine.providers.results import Receipt
from engine.queries import QUERIES
from engine.receipt_arrival import store_and_apply
from engine.receipts import ReceiptRows
from engine.status import MessageStatus

T = TypeVar("T")

QUEUE = """
INSERT INTO campaigns (name, spec, spec_hash) VALUES ('statements', '{}', 'h');
INSERT INTO campaign_runs (campaign_id, scheduled_for, status, spec, counts)
SELECT id, now(), 'sending', '{}', '{}' FROM campaigns;
INSERT INTO messages (run_id, phone, account, sender, body, encoding, segments, cost, status,
                      next_attempt_at, expires_at)
SELECT r.id, '+2782' || lpad(g::text, 7, '0'), 'bulk', 'ACME',
       'Hello there, your code is ' || g, 'GSM-7', 1, 0.2, 'queued',
       now() - interval '1 minute', now() + interval '1 day'
  FROM campaign_runs r, generate_series(1, $N) g;
"""


@dataclass
class Cost:
    """Wall time, backend CPU and WAL bytes spent by one kind of statement."""

    wall: float = 0.0
    cpu: float = 0.0
    wal: int = 0
    calls: int = 0


class Meter:
    """Measures statements run on one connection."""

    def __init__(self, conn: asyncpg.Connection, backend: psutil.Process) -> None:
        self.conn, self.backend = conn, backend
        self.costs: dict[str, Cost] = {}

    async def wal(self) -> int:
        return int(await self.conn.fetchval("SELECT wal_bytes FROM pg_stat_wal"))

    def cpu(self) -> float:
        times = self.backend.cpu_times()
        return float(times.user + times.system)

    async def measure(self, name: str, work: Awaitable[T]) -> T:
        wal, cpu, started = await self.wal(), self.cpu(), time.perf_counter()
        result = await work
        wall = time.perf_counter() - started
        cost = self.costs.setdefault(name, Cost())
        cost.wall += wall
        cost.cpu += self.cpu() - cpu
        cost.wal += await self.wal() - wal
        cost.calls += 1
        return result


def receipts_for(ids: list[int], per_message: int) -> list[ReceiptRows]:
    """The receipts the bulk simulator posts for these sent messages, in posting order."""
    statuses = [MessageStatus.SENT, MessageStatus.DELIVERED][-per_message:]
    batches = []
    for status in statuses:
        rows = ReceiptRows()
        for mid in ids:
            rows.add(
                "bulk",
                Receipt(
                    f"p{mid}",
                    mid,
                    status,
                    status.value.upper(),
                    event_id=f"{mid}-{status.value}",
                    raw={"id": f"p{mid}", "status": status.value.upper()},
                ),
            )
        batches.append(rows)
    return batches


async def run(args: argparse.Namespace) -> None:
    async with fresh_database(args.database_url, "statements") as url:
        conn = await db.connect(url)
        for name in args.without_index:
            await conn.execute(f'DROP INDEX "{name}"')
        await conn.execute(QUEUE.replace("$N", str(int(args.n))))
        await conn.execute("VACUUM ANALYZE messages")
        run_id = await conn.fetchval("SELECT id FROM campaign_runs")
        meter = Meter(conn, psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
        lease = datetime.now(UTC) + timedelta(hours=1)
        done = 0
        while True:
            claimed = await meter.measure(
                "claim",
                conn.fetch(QUERIES["claim_messages"], run_id, args.batch, "w1", lease, False),
            )
            ids = [row["id"] for row in claimed]
            if not ids:
                break
            n = len(ids)
            await meter.measure(
                "record",
                conn.execute(
                    QUERIES["record_results"],
                    ids,
                    ["sent"] * n,
                    [f"p{i}" for i in ids],
                    [None] * n,
                    [None] * n,
                    [None] * n,
                    [0] * n,
                    "w1",
                    [True] * n,
                ),
            )
            for start in range(0, n, args.receipt_batch):
                chunk = ids[start : start + args.receipt_batch]
                for rows in receipts_for(chunk, args.receipts):
                    await meter.measure("arrival", store_and_apply(conn, rows, "webhook"))
            done += n
        final = await conn.fetch("SELECT status::text, count(*) FROM messages GROUP BY 1")
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.close()  # its statistics are flushed as it exits
        conn = await db.connect(url)
        await asyncio.sleep(0.5)
        stats = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'messages'"
        )
        await conn.close()
    print(f"N = {done:,} messages; batches: claim {args.batch}, receipts {args.receipt_batch}")
    if args.without_index:
        print("without: " + ", ".join(args.without_index))
    print(
        f"{'statement':<10} {'wall µs/msg':>12} {'CPU µs/msg':>11} {'WAL B/msg':>10} {'calls':>7}"
    )
    total = Cost()
    for name, cost in meter.costs.items():
        print(
            f"{name:<10} {cost.wall / done * 1e6:>12.1f} {cost.cpu / done * 1e6:>11.1f}"
            f" {cost.wal / done:>10.0f} {cost.calls:>7}"
        )
        total.wall, total.cpu, total.wal = (
            total.wall + cost.wall,
            total.cpu + cost.cpu,
            total.wal + cost.wal,
        )
    print(
        f"{'total':<10} {total.wall / done * 1e6:>12.1f} {total.cpu / done * 1e6:>11.1f}"
        f" {total.wal / done:>10.0f}"
    )
    print(f"updates of messages: {stats['n_tup_upd']:,}, of which HOT {stats['n_tup_hot_upd']:,}")
    print("final statuses: " + ", ".join(f"{r[0]} {r[1]:,}" for r in final))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="claim size")
    parser.add_argument("--receipt-batch", type=int, default=400, help="receipts per call")
    parser.add_argument("--receipts", type=int, choices=(1, 2), default=2, help="per message")
    parser.add_argument("--database-url", help="a server on this machine (default: embedded)")
    parser.add_argument("--without-index", action="append", default=[], metavar="NAME")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
