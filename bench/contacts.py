"""Benchmark ``engine.contacts_import.import_contacts``: rows per second and peak memory.

Run ``python bench/contacts.py [--n 1000000] [--database-url URL]``.
It writes a CSV of N generated contacts (numbers in several countries and formats,
about 1% invalid, about 0.5% repeated, a few attributes) to a temporary file, creates
a fresh database (on the server of ``--database-url`` / ``$DATABASE_URL``, else an
embedded PostgreSQL in a temporary directory), migrates it and imports the file
into a group. Peak RSS is ``ru_maxrss``; run with two sizes to see that it does not
grow with the file. The CPU time of this process and of its PostgreSQL backend per row
shows which side bounds the rate. ``--profile`` instead profiles (cProfile) reading and
preparing the file without a database: the Python half of the work, which the import
runs in a thread while PostgreSQL applies the previous batch.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import os
import pstats
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import fresh_database

from engine import contacts_csv, contacts_import, db

ZONES = ("Africa/Johannesburg", "America/New_York", "Europe/London", "America/Sao_Paulo")
CITIES = ("Cape Town", "Durban", "New York", "London", "São Paulo", "Pretoria", "Leeds")
NAMES = ("Ann", "Bongani", "Carla", "Dmitri", "Esi", "Farah", "Gus", "Thandi", "Zoë")
JUNK = ("n/a", "12345", "+999 123 4567", "082 12", "not given", "0000000000000000000")


def za_national(rng: random.Random) -> str:
    """A South African mobile number as people write it at home (region ZA)."""
    prefix = f"0{rng.choice('678')}{rng.choice('1234')}"
    return f"{prefix} {rng.randrange(1000):03d} {rng.randrange(10000):04d}"


def za_e164(rng: random.Random) -> str:
    """A South African mobile number in E.164."""
    return f"+27{rng.choice('678')}{rng.choice('1234')}{rng.randrange(10**7):07d}"


def us(rng: random.Random) -> str:
    """A US number, formatted the American way."""
    area = rng.choice((212, 415, 646, 312, 617, 206))
    return f"+1 ({area}) {rng.randrange(200, 1000)}-{rng.randrange(10000):04d}"


def gb(rng: random.Random) -> str:
    """A UK mobile number, written with the international prefix 00."""
    return f"0044 7{rng.choice('4579')}{rng.randrange(10**8):08d}"


def br(rng: random.Random) -> str:
    """A São Paulo mobile number."""
    return f"+55 11 9{rng.randrange(6000, 10000)}-{rng.randrange(10000):04d}"


FORMATS = (za_national, za_national, za_e164, za_e164, us, gb, br)


def rows(n: int, seed: int = 7) -> Iterator[list[str]]:
    """N data rows: phone, first_name, last_name, timezone, city, tier."""
    rng = random.Random(seed)
    recent: list[str] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.01:
            phone = rng.choice(JUNK)
        elif roll < 0.015 and recent:
            phone = rng.choice(recent)  # the same person twice in one file
        else:
            phone = rng.choice(FORMATS)(rng)
            recent = [*recent[-99:], phone]
        zone = rng.choice(ZONES) if roll < 0.5 else ""
        tier = rng.choice(("gold", "silver", "")) if i % 3 else ""
        yield [phone, rng.choice(NAMES), f"Surname{i % 977}", zone, rng.choice(CITIES), tier]


def write_csv(path: Path, n: int) -> None:
    """Write the header and N rows to ``path``."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["phone", "first_name", "last_name", "timezone", "city", "tier"])
        writer.writerows(rows(n))


def process_cpu() -> float:
    """CPU seconds (user + system) used by this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def backend_cpu(pid: int) -> float:
    """CPU seconds used by a local PostgreSQL backend so far; -1 when it is not local."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args: argparse.Namespace) -> None:
    """Generate, import, report."""
    with tempfile.TemporaryDirectory(prefix="bench-contacts-") as tmp:
        path = Path(tmp) / "contacts.csv"
        started = time.perf_counter()
        write_csv(path, args.n)
        size = path.stat().st_size / 2**20
        print(f"generated {args.n:,} rows ({size:.0f} MiB) in {time.perf_counter() - started:.1f}s")
        if args.profile:
            profile_prepare(path)
            return
        async with fresh_database(args.database_url, "contacts") as url:
            conn = await db.connect(url)
            try:
                await import_once(conn, path, args)
            finally:
                await conn.close()


async def import_once(conn: asyncpg.Connection, path: Path, args: argparse.Namespace) -> None:
    """Import the file once, timed, and print the figures."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    rss_before = current_rss_mib()
    cpu_before = process_cpu(), backend_cpu(backend)
    started = time.perf_counter()
    report = await contacts_import.import_contacts(
        conn, path, group="bench", region="ZA", batch_size=args.batch_size
    )
    elapsed = time.perf_counter() - started
    python_cpu, server_cpu = process_cpu() - cpu_before[0], backend_cpu(backend) - cpu_before[1]
    count = await conn.fetchval("SELECT count(*) FROM contacts")
    print(
        f"rows {report.rows:,}: imported {report.imported:,}, updated {report.updated:,}, "
        f"invalid {report.invalid_total:,}, repeated {report.duplicates_in_file:,}; "
        f"contacts table {count:,}"
    )
    print(f"imported in {elapsed:.1f}s: {report.rows / elapsed:,.0f} rows/s")
    per_row = 1e6 / report.rows
    server = f"{server_cpu * per_row:.1f} µs" if server_cpu >= 0 else "unknown (remote server)"
    print(
        f"CPU per row: this process {python_cpu * per_row:.1f} µs, its PostgreSQL backend {server}"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"RSS before the import {rss_before:.0f} MiB, after {current_rss_mib():.0f} MiB; "
        f"peak RSS (ru_maxrss) {peak_rss_mib():.0f} MiB"
    )


def profile_prepare(path: Path) -> None:
    """cProfile reading, normalising and preparing every batch of the file (no database)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = contacts_csv.csv_reader(stream, str(path))
        where = contacts_csv.read_header(reader, str(path))
        rows = sum(
            contacts_csv.prepare_batch(batch, where, "ZA").rows
            for batch in contacts_csv.row_batches(reader, str(path), contacts_import.BATCH_SIZE)
        )
    profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"prepared {rows:,} rows in {elapsed:.1f}s under cProfile")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--batch-size", type=int, default=contacts_import.BATCH_SIZE)
    parser.add_argument("--profile", action="store_true", help="profile the Python side only")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
