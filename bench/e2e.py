"""End-to-end benchmark: import, expand, send and reconcile a whole campaign.

``python bench/e2e.py [--n 1000000] [--database-url URL] [--concurrency 32]``

For a single-send and a bulk simulator account, each on a fresh database (embedded
PostgreSQL by default, or the server of ``--database-url``/``$DATABASE_URL``):

1. the limits, measured first on the same machine: a bare aiohttp client posting the same
   requests to the same simulator with no database; the bare pipeline
   (:mod:`bare_pipeline`: the same sends, and the simulator's receipts posted to a bare
   receiver that only counts them, up to 100,000 messages); and a bare COPY of the same rows
   into a copy of the ``messages`` table;
2. N generated contacts imported from CSV, a campaign applied, and ``engine run`` (a
   subprocess) expanding and sending it through the simulator (its own process), which
   posts a receipt for every accepted message (with failures, duplicates and receipts out
   of order); we wait until every message is final.

It prints the wall time, recipients/s expanded, messages/s dispatched, receipts/s applied,
the daemon's peak memory, the CPU split between the daemon and PostgreSQL, and the ratios
to the limits; and it fails (exit 1) unless every message ended final and the simulator
received every number at most once. ``--n 2000`` is the CI smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from bare_pipeline import bare_pipeline
from common import SECRET, Simulator, free_port, fresh_database
from dispatch import raw_limit
from pgcpu import ServerCpu

from engine import campaigns, contacts_import, db
from engine.config import EngineConfig
from engine.spec import Campaign

REPO = Path(__file__).resolve().parent.parent


def write_contacts(path: Path, n: int) -> None:
    rng = random.Random(3)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["phone", "first_name", "locale", "tier"])
        seen: set[int] = set()
        while len(seen) < n:
            number = rng.randrange(10**7)
            if number in seen:
                continue
            seen.add(number)
            writer.writerow(
                [
                    f"+2782{number:07d}",
                    f"Name{number % 5000}",
                    rng.choice(["en", "es", "pt-BR", ""]),
                    rng.choice("abc"),
                ]
            )


async def copy_limit(url: str, n: int) -> float:
    """Rows per second of a bare COPY of message rows into a copy of ``messages``."""
    conn = await db.connect(url)
    try:
        await conn.execute("CREATE TABLE copy_probe (LIKE messages INCLUDING ALL)")
        run_id = await conn.fetchval(
            "INSERT INTO campaigns (name, spec, spec_hash) VALUES ('probe', '{}', '') RETURNING id"
        )
        run_id = await conn.fetchval(
            "INSERT INTO campaign_runs (campaign_id, scheduled_for)"
            " VALUES ($1, now()) RETURNING id",
            run_id,
        )
        now = datetime.now(UTC)
        rows = [
            (
                run_id,
                f"+2783{i:07d}",
                "sim",
                "Hi Name there, as a b member you get 20% off today. Reply STOP to opt out",
                "GSM-7",
                1,
                1,
                "queued",
                now,
                now,
            )
            for i in range(n)
        ]
        started = time.perf_counter()
        for i in range(0, n, 5000):
            await conn.copy_records_to_table(
                "copy_probe",
                records=rows[i : i + 5000],
                columns=(
                    "run_id",
                    "phone",
                    "account",
                    "body",
                    "encoding",
                    "segments",
                    "cost",
                    "status",
                    "next_attempt_at",
                    "expires_at",
                ),
            )
        rate = n / (time.perf_counter() - started)
        await conn.execute("DROP TABLE copy_probe")
        await conn.execute("DELETE FROM campaigns WHERE name = 'probe'")
        return rate
    finally:
        await conn.close()


@dataclass
class Usage:
    """CPU seconds and peak memory of the daemon, and CPU seconds of PostgreSQL (split by
    kind of process, :mod:`pgcpu`) and of the simulator (the provider's stand-in shares the
    machine, so its share is reported too)."""

    simulator_pid: int
    server: ServerCpu
    daemon_cpu: float = 0.0
    daemon_peak_mib: float = 0.0
    postgres_cpu: float = 0.0
    postgres_split: dict[str, float] = field(default_factory=dict)
    simulator_cpu: float = 0.0
    start_simulator: float = 0.0

    def __post_init__(self) -> None:
        self.start_simulator = self.cpu(self.simulator_pid)

    @staticmethod
    def cpu(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def sample(self, pid: int) -> None:
        try:
            self.daemon_cpu = self.cpu(pid) or self.daemon_cpu
            status = Path(f"/proc/{pid}/status").read_text()
            hwm = [line for line in status.splitlines() if line.startswith("VmHWM")]
            if hwm:
                self.daemon_peak_mib = int(hwm[0].split()[1]) / 1024
        except OSError:
            return
        self.server.sample()
        self.postgres_split = self.server.by_kind()
        self.postgres_cpu = sum(self.postgres_split.values())
        self.simulator_cpu = self.cpu(self.simulator_pid) - self.start_simulator


async def one_run(args: argparse.Namespace, bulk: bool) -> dict[str, Any]:
    label = "bulk" if bulk else "single"
    raw_sim = Simulator(None)
    raw_n = min(args.n, 50_000)
    try:
        client, simulator = Usage.cpu(os.getpid()), Usage.cpu(raw_sim.proc.pid)
        raw = await raw_limit(raw_sim.url, raw_n, 100 if bulk else 1, args.concurrency)
        raw_cpu = (
            (Usage.cpu(os.getpid()) - client) * 1000 / raw_n,
            (Usage.cpu(raw_sim.proc.pid) - simulator) * 1000 / raw_n,
        )
    finally:
        raw_sim.stop()
    bare = await bare_pipeline(min(args.n, 100_000), bulk, args.concurrency)
    async with fresh_database(args.database_url, f"e2e_{label}") as url:
        copy = await copy_limit(url, min(args.n, 200_000))
        port = free_port()
        sim = Simulator(f"http://127.0.0.1:{port}/webhooks/sim")
        try:
            figures = await engine_run(args, url, sim, port, bulk)
        finally:
            sim.stop()
    figures.update(label=label, raw=raw, raw_cpu=raw_cpu, copy=copy, bare=bare)
    return figures


async def engine_run(
    args: argparse.Namespace, url: str, sim: Simulator, port: int, bulk: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "engine.yaml"
        config_path.write_text(
            f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
            f"providers:\n  sim:\n    type: simulator\n    base_url: {sim.url}\n"
            f"    rate: 1000000\n    concurrency: {args.concurrency}\n"
            f"    bulk: {'true' if bulk else 'false'}\n    batch_size: 100\n"
            f"    webhook_secret: {SECRET}\n"
        )
        config = EngineConfig.model_validate({"providers": {"sim": {"type": "simulator"}}})
        conn = await db.connect(url)
        postgres = await conn.fetchval("SHOW server_version")
        csv_path = Path(tmp) / "contacts.csv"
        write_contacts(csv_path, args.n)
        started = time.perf_counter()
        report = await contacts_import.import_contacts(conn, csv_path, group="all", region="ZA")
        imported = report.rows / (time.perf_counter() - started)
        spec = Campaign.from_spec(
            {
                "name": "bench",
                "provider": "sim",
                "schedule": {"now": True},
                "audience": {"groups": ["all"]},
                "message": {
                    "body": "Hi {{ first_name }}, as a {{ tier }} member you get 20% off"
                    " today. Reply STOP to opt out",
                    "locales": {
                        "es": "Hola {{ first_name }}, 20% de descuento hoy."
                        " Responde STOP para salir"
                    },
                },
            }
        )
        usage = Usage(sim.proc.pid, ServerCpu(conn.get_server_pid()))
        wall = time.perf_counter()
        await campaigns.apply_campaign(conn, spec, config_path, config)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine",
            "--config",
            str(config_path),
            "--log-level",
            "WARNING",
            "run",
            env={**os.environ, "DATABASE_URL": url},
            cwd=REPO,
        )
        try:
            counts = await wait_final(conn, daemon.pid, usage, args.timeout)
        finally:
            daemon.send_signal(signal.SIGTERM)
            await daemon.wait()
        wall = time.perf_counter() - wall
        figures = await measured(conn)
        await conn.close()
    stats = await sim.stats()
    most = max(stats["per_number"].values(), default=0)
    figures.update(
        wall=wall,
        imported=imported,
        counts=counts,
        most=most,
        usage=usage,
        postgres=postgres,
        accepted=stats["accepted"],
    )
    return figures


async def wait_final(conn: Any, pid: int, usage: Usage, within: float) -> dict[str, int]:
    """Wait until the daemon completes the run (it does once every message is final: the
    receipt window is far longer than the run), then count the statuses once. Counting
    them every poll would scan the table and compete with the engine for CPU."""
    deadline = time.monotonic() + within
    while True:
        usage.sample(pid)
        runs = await conn.fetch("SELECT status::text FROM campaign_runs")
        if runs and all(r["status"] == "completed" for r in runs):
            rows = await conn.fetch("SELECT status::text, count(*) AS n FROM messages GROUP BY 1")
            return {r["status"]: r["n"] for r in rows}
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the run did not complete within {within:.0f}s: {[r['status'] for r in runs]}"
            )
        await asyncio.sleep(0.5)


MEASURED = """
SELECT (SELECT count(*) FROM messages) AS recipients,
       (SELECT extract(epoch FROM expanded_at - started_at) FROM campaign_runs LIMIT 1)
           AS expand_s,
       (SELECT count(sent_at) FROM messages) AS sent,
       (SELECT extract(epoch FROM max(sent_at) - min(sent_at)) FROM messages) AS dispatch_s,
       (SELECT count(*) FROM receipts WHERE applied_at IS NOT NULL) AS applied,
       (SELECT extract(epoch FROM max(applied_at) - min(received_at)) FROM receipts) AS receipt_s,
       (SELECT extract(epoch FROM (SELECT max(applied_at) FROM receipts)
                                - (SELECT min(sent_at) FROM messages))) AS pipeline_s
"""


async def measured(conn: Any) -> dict[str, Any]:
    row = await conn.fetchrow(MEASURED)
    return {
        "expand": row["recipients"] / max(float(row["expand_s"] or 0), 1e-3),
        "dispatch": row["sent"] / max(float(row["dispatch_s"] or 0), 1e-3),
        "receipts": row["applied"] / max(float(row["receipt_s"] or 0), 1e-3),
        "pipeline": row["sent"] / max(float(row["pipeline_s"] or 0), 1e-3),
        "recipients": row["recipients"],
    }


def show(f: dict[str, Any]) -> bool:
    u: Usage = f["usage"]
    total_cpu = u.daemon_cpu + u.postgres_cpu or 1
    print(f"\n== {f['label']} account, {f['recipients']:,} recipients (PostgreSQL {f['postgres']})")
    print(f"wall time (apply -> run completed, every message final): {f['wall']:.1f}s")
    print(f"import:    {f['imported']:>10,.0f} rows/s")
    print(
        f"expansion: {f['expand']:>10,.0f} recipients/s  ({f['expand'] / f['copy']:.0%} of a"
        f" bare COPY at {f['copy']:,.0f} rows/s)"
    )
    print(
        f"dispatch:  {f['dispatch']:>10,.0f} messages/s   ({f['dispatch'] / f['raw']:.0%} of a"
        f" bare aiohttp client at {f['raw']:,.0f} msg/s)"
    )
    print(f"receipts:  {f['receipts']:>10,.0f} applied/s")
    bare = f["bare"]
    print(
        f"pipeline:  {f['pipeline']:>10,.0f} messages/s, first send -> last receipt applied"
        f"  ({f['pipeline'] / bare.rate:.0%} of a bare pipeline at {bare.rate:,.0f} msg/s:"
        f" same sends and receipts, no database)"
    )
    print(
        "bare pipeline CPU per message: "
        + ", ".join(f"{name} {ms:.3f} ms" for name, ms in bare.cpu_ms.items())
    )
    print(
        f"bare client CPU per message: client {f['raw_cpu'][0]:.2f} ms, simulator"
        f" {f['raw_cpu'][1]:.2f} ms"
    )
    per = 1000 / max(f["recipients"], 1)
    print(
        f"daemon peak memory: {u.daemon_peak_mib:.0f} MiB; CPU: daemon {u.daemon_cpu:.1f}s,"
        f" PostgreSQL {u.postgres_cpu:.1f}s ({u.daemon_cpu / total_cpu:.0%} engine),"
        f" simulator {u.simulator_cpu:.1f}s"
    )
    print(
        f"CPU per message: daemon {u.daemon_cpu * per:.2f} ms, PostgreSQL"
        f" {u.postgres_cpu * per:.2f} ms, simulator {u.simulator_cpu * per:.2f} ms"
        f" ({os.cpu_count()} cores)"
    )
    print(
        "PostgreSQL CPU per message by process: "
        + ", ".join(f"{kind} {s * per:.3f} ms" for kind, s in u.postgres_split.items())
    )
    print(f"final statuses: {f['counts']}")
    print(f"simulator accepted {f['accepted']:,}; most messages to one number: {f['most']}")
    return f["most"] <= 1 and not set(f["counts"]) & {"queued", "sending", "sent"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--only", choices=("single", "bulk"))
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also send the same N through pgqueuer (pip install .[bench])",
    )
    args = parser.parse_args()
    memory = psutil.virtual_memory().total / 2**30
    print(
        f"machine: {os.cpu_count()} cores, {memory:.0f} GiB, {platform.platform()},"
        f" Python {platform.python_version()}; N = {args.n:,}"
    )
    ok = True
    single_rate = None
    for bulk in (False, True):
        if args.only and args.only != ("bulk" if bulk else "single"):
            continue
        figures = asyncio.run(one_run(args, bulk))
        ok = show(figures) and ok
        single_rate = single_rate if bulk else figures["dispatch"]
    if args.peer and single_rate:
        from peer_pgqueuer import peer_config, peer_rate

        sim = Simulator(None)
        try:
            peer = asyncio.run(peer_rate(args.database_url, sim.url, args.n, args.concurrency))
        finally:
            sim.stop()
        print(f"\n== pgqueuer peer ({peer_config(args.concurrency)})")
        print(
            f"peer: {peer:,.0f} messages/s; engine single-send {single_rate:,.0f} messages/s"
            f" = {single_rate / peer:.1f}x the peer"
        )
    if not ok:
        raise SystemExit("a message did not end final, or a number received two")


if __name__ == "__main__":
    main()
