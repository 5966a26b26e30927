"""``engine demo``: a whole campaign out and back on the simulator, in under a minute.

It needs no configuration and touches nothing of yours: it works in a directory of its
own, a temporary one removed at the end (``--dir PATH`` keeps it instead), where it starts
an embedded PostgreSQL, and runs the provider simulator and a daemon on free local ports;
imports a generated contact list (several countries, locales and time zones, some invalid
numbers, some opted out); applies the example campaigns shipped inside the package
(``engine/demo_data/campaigns``, a copy of the repository's ``campaigns/``) and sends
``welcome-now``; shows live progress while receipts come back (deliveries, failures,
duplicates, receipts out of order, and one STOP reply); and ends with the outcome report.

A kept directory is laid out like a project (``engine.yaml``, ``.engine/pgdata``,
``contacts.csv``), so ``engine report welcome-now`` run there reads the demo's data. The
demo starts afresh in a directory it made before, and refuses one holding anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from engine import (
    audience,
    campaign_loader,
    campaigns,
    contacts_import,
    db,
    demo_failover,
    link_reports,
    migrate,
    phones,
    scheduler,
)
from engine.config import EngineConfig
from engine.daemon import Daemon
from engine.errors import EngineError
from engine.queries import QUERIES
from engine.report_output import render
from engine.reports import Report
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from engine.status import FINAL_STATUSES

DEMO_CAMPAIGN = "welcome-now"
#: the example campaigns shipped as package data; a plain path because an installed
#: package is a directory (importlib.resources.as_file takes directories only from 3.12)
PACKAGED_CAMPAIGNS = Path(__file__).parent / "demo_data" / "campaigns"
#: first line of the engine.yaml a demo writes: how it recognises a directory of its own
MARKER = "# written by 'engine demo': the demo's own settings, safe to delete"
DATA_DIR = ".engine"
# the demo's simulator posts receipts with this secret (16+ characters, as any secret)
DEMO_SECRET = "demo-webhook-secret"
CONTACTS = 3000
FIRST = ("Ann", "Bongani", "Carla", "Diego", "Esi", "Farah", "João", "Lerato", "Marie", "Zoë")
#: (share, region, number maker, locale, time zone)
PEOPLE: tuple[tuple[float, str, Callable[[random.Random], str], str | None, str | None], ...] = (
    (
        0.45,
        "ZA",
        lambda r: f"+27{r.choice('678')}{r.choice('1234')}{r.randrange(10**7):07d}",
        "en",
        "Africa/Johannesburg",
    ),
    (0.15, "MX", lambda r: f"+52155{r.randrange(10**8):08d}", "es-MX", "America/Mexico_City"),
    (0.10, "ES", lambda r: f"+346{r.randrange(10**8):08d}", "es", None),
    (
        0.15,
        "BR",
        lambda r: f"+55119{r.randrange(6000, 10000)}{r.randrange(10**4):04d}",
        "pt-BR",
        "America/Sao_Paulo",
    ),
    (0.10, "US", lambda r: f"+1415{r.randrange(200, 1000)}{r.randrange(10**4):04d}", None, None),
    (0.05, "FR", lambda r: f"+336{r.randrange(10**8):08d}", "fr", "Europe/Paris"),
)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_contacts(path: Path, count: int, rng: random.Random) -> None:
    """A realistic contact list: mostly valid, a few broken numbers."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["phone", "first_name", "last_name", "locale", "timezone", "plan"])
        for i in range(count):
            if i % 97 == 0:
                writer.writerow(["0800-NOT-A-NUMBER", "Broken", "Row", "", "", ""])
                continue
            _, _, make, locale, zone = rng.choices(PEOPLE, [p[0] for p in PEOPLE])[0]
            name = rng.choice(FIRST) if rng.random() > 0.1 else ""
            writer.writerow(
                [
                    make(rng),
                    name,
                    f"Doe{i}",
                    locale or "",
                    zone or "",
                    rng.choice(["free", "pro", "team"]),
                ]
            )


def demo_settings(sim_url: str, port: int, backup_url: str) -> dict[str, Any]:
    """Two simulator accounts behind the route ``simulator`` (engine.demo_failover), the
    local listener, prices for the demo's countries."""
    return {
        **demo_failover.route_settings(sim_url, backup_url, DEMO_SECRET),
        "data_dir": DATA_DIR,
        "default_region": "ZA",
        "webhooks": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        "pricing": {
            "default": "1.0",
            "prefixes": {
                "27": "0.25",
                "52": "0.45",
                "55": "0.40",
                "1": "0.30",
                "34": "0.60",
                "33": "0.70",
            },
        },
    }


def demo_config(workdir: Path, sim_url: str, port: int, backup_url: str) -> EngineConfig:
    """The demo's configuration, written to ``workdir/engine.yaml`` for later commands."""
    settings = demo_settings(sim_url, port, backup_url)
    (workdir / "engine.yaml").write_text(
        f"{MARKER}\n{yaml.safe_dump(settings, sort_keys=False)}", encoding="utf-8"
    )
    return EngineConfig.model_validate({**settings, "data_dir": str(workdir / DATA_DIR)})


async def run_demo(
    workdir: Path | None, campaigns_dir: Path | None = None, out: Any = sys.stdout
) -> int:
    """The whole demo in ``workdir`` (kept) or a temporary directory (removed); exit code."""
    campaigns_dir = PACKAGED_CAMPAIGNS if campaigns_dir is None else campaigns_dir
    if not (campaigns_dir / f"{DEMO_CAMPAIGN}.yaml").is_file():
        # before anything is started or imported, so a wrong directory costs nothing
        raise EngineError(
            f"{campaigns_dir} has no {DEMO_CAMPAIGN}.yaml: engine demo needs"
            " campaigns/ with the example campaigns (or no --campaigns)"
        )
    say = _printer(out)
    with _workspace(workdir) as where:
        await _run(where, campaigns_dir, say)
    say(
        f"The demo's database and files stay in {where}: 'cd {where}' and try 'engine report"
        f" {DEMO_CAMPAIGN}' or 'engine campaign list'."
        if workdir is not None
        else "Nothing was left behind: the demo's database and files are removed"
        " ('engine demo --dir PATH' keeps them)."
    )
    return 0


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    """``keep`` (checked to be new, empty or the demo's) or a temporary directory."""
    if keep is not None:
        yield _claim(keep)
        return
    where = Path(tempfile.mkdtemp(prefix="engine-demo-"))
    try:
        yield where
    finally:
        _remove(where)


def _remove(where: Path) -> None:
    """Stop the demo's server, then delete its directory and any socket directory outside."""
    socket_dir = _socket_dir(where / DATA_DIR)
    try:
        # the server must stop before its files go, or it keeps running on deleted files
        db.stop_embedded(where / DATA_DIR)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    # where the data path is too long for a Unix socket, the server listened in a directory
    # of the system's run or temp directory: remove it too once the server has left it empty
    if socket_dir is not None and not socket_dir.is_relative_to(where):
        with contextlib.suppress(OSError):  # not empty or already gone: not ours to force
            socket_dir.rmdir()


def _socket_dir(data_dir: Path) -> Path | None:
    """The running server's socket directory: line 5 of PostgreSQL's postmaster.pid."""
    try:
        lines = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return Path(lines[4]) if len(lines) > 4 and lines[4] else None


def _claim(where: Path) -> Path:
    """Make sure ``where`` is ours to use: new, empty, or made by an earlier demo."""
    where = where.resolve()
    if where.exists() and not where.is_dir():
        raise EngineError(f"--dir {where} is a file, not a directory")
    if where.is_dir() and any(where.iterdir()):
        config = where / "engine.yaml"
        if not (config.is_file() and config.read_text(encoding="utf-8").startswith(MARKER)):
            raise EngineError(
                f"--dir {where} is not empty and not an earlier demo's: give"
                " engine demo a new or empty directory"
            )
    where.mkdir(parents=True, exist_ok=True)
    return where


async def _run(workdir: Path, campaigns_dir: Path, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    port, sim_port, backup_port = free_port(), free_port(), free_port()
    url = await _demo_database(workdir / DATA_DIR)
    async with (
        await serve(_sim_settings(port, demo_failover.PRIMARY), "127.0.0.1", sim_port) as sim,
        await serve(_sim_settings(port, demo_failover.BACKUP), "127.0.0.1", backup_port) as b,
    ):
        config = demo_config(workdir, sim.url, port, b.url)
        await _prepare(url, config, workdir, campaigns_dir, say)
        stop = asyncio.Event()
        daemon = Daemon(config, url, poll_interval=0.2)
        running = asyncio.create_task(daemon.run(stop))
        try:
            run_id = await _await_run(url, running)
            failing = asyncio.create_task(demo_failover.outage(url, sim, run_id, say))
            await _stop_reply(url, sim, run_id, say)
            await _progress(url, run_id, running, say)
            await _complete(url, config)
        finally:
            stop.set()
            await asyncio.gather(running, return_exceptions=True)
            failing.cancel()
        say(
            f"the simulators received {sim.stats.accepted + b.stats.accepted} messages for "
            f"{len(set(sim.stats.per_number) | set(b.stats.per_number))} numbers; most to one"
            f" number: {demo_failover.most_to_one_number(sim.stats, b.stats)}"
        )
    await _outcome(url, run_id, say)
    await demo_failover.carried(url, run_id, say)
    say(f"\ndone in {time.monotonic() - started:.0f}s.")


def _sim_settings(port: int, account: str) -> SimulatorSettings:
    """One simulator standing in for one provider account (receipts to its webhook)."""
    return SimulatorSettings(
        seed=42 if account == demo_failover.PRIMARY else 43,
        default=FamilySettings(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/{account}",
            webhook_secret=DEMO_SECRET,
            latency=(0.002, 0.02),
            delivered=0.88,
            undelivered=0.06,
            receipt_delay=(0.2, 3.0),
            duplicates=0.05,
            out_of_order=0.05,
            early_receipts=0.02,
            clicks=0.12,  # recipients who follow the link; more for the "1 min" wording
            click_rates={"1 min": 0.4},
        ),
    )


def _printer(out: Any) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    return say


async def _demo_database(data_dir: Path) -> str:
    """The embedded server under ``data_dir``, its database emptied for a fresh start."""
    url = db.embedded_url(data_dir)
    conn = await db.connect(url)
    try:
        # a directory of an earlier demo (checked by _claim): start again from nothing
        await conn.execute(QUERIES["demo_drop_schema"])
        await conn.execute(QUERIES["demo_create_schema"])
    finally:
        await conn.close()
    return url


async def _prepare(
    url: str, config: EngineConfig, workdir: Path, campaigns_dir: Path, say: Callable[[str], None]
) -> None:
    conn = await db.connect(url)
    try:
        await migrate.migrate(conn)
        path = workdir / "contacts.csv"
        write_contacts(path, CONTACTS, random.Random(7))
        report = await contacts_import.import_contacts(conn, path, group="demo", region="ZA")
        say(
            f"imported {report.imported} contacts into group 'demo' "
            f"({report.invalid_total} invalid rows reported and skipped)"
        )
        opted_out = await conn.fetch(QUERIES["demo_first_contacts"], 30)
        for row in opted_out[::3]:
            await audience.suppress(conn, row["phone"], reason="demo", source="demo")
        say(f"{len(opted_out[::3])} contacts had opted out before the campaign")
        await _apply_examples(conn, config, campaigns_dir, say)
    finally:
        await conn.close()


async def _apply_examples(
    conn: Any, config: EngineConfig, campaigns_dir: Path, say: Callable[[str], None]
) -> None:
    loaded, problems = campaign_loader.load_paths(
        [campaigns_dir], accounts=config.provider_names(), default_region=config.default_region
    )
    for problem in problems:
        say(problem)
    for path, campaign in loaded:
        applied = await campaigns.apply_campaign(conn, campaign, path, config)
        say(
            f"applied {path.name}: {applied.action}"
            + (
                f", first run {applied.next_run_at:%Y-%m-%d %H:%M} UTC"
                if applied.next_run_at
                else ""
            )
        )


async def _await_run(url: str, running: asyncio.Task[None]) -> int:
    conn = await db.connect(url)
    try:
        for _ in range(300):
            if running.done():
                await running
            run_id = await conn.fetchval(QUERIES["demo_run_started"], DEMO_CAMPAIGN)
            if run_id is not None:
                return int(run_id)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise EngineError("the demo campaign did not start within a minute")


async def _stop_reply(
    url: str, sim: RunningSimulator, run_id: int, say: Callable[[str], None]
) -> None:
    """One recipient answers STOP, as people do."""
    conn = await db.connect(url)
    try:
        for _ in range(100):
            phone = await conn.fetchval(QUERIES["demo_sent_phone"], run_id)
            if phone is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    if phone is None:
        return
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.url}/sim/inbound/simulator", json={"from": phone, "text": "STOP"}
        ) as resp,
    ):
        resp.raise_for_status()
    say(f"{phones.mask(phone)} replied STOP")


async def _progress(
    url: str,
    run_id: int,
    running: asyncio.Task[None],
    say: Callable[[str], None],
    deadline: float = 45.0,
) -> None:
    """Live counts until every message of the run is final (or the deadline passes)."""
    conn = await db.connect(url)
    final = sorted(FINAL_STATUSES)
    tty = sys.stdout.isatty()
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline:
            if running.done():
                await running
            rows = await conn.fetch(QUERIES["demo_status_counts"], run_id)
            counts = {r["status"]: r["n"] for r in rows}
            line = "  ".join(f"{k} {v}" for k, v in counts.items())
            if tty:
                sys.stdout.write(f"\r\x1b[K{line}")
                sys.stdout.flush()
            else:
                say(line)
            if all(status in final for status in counts) and not await conn.fetchval(
                QUERIES["demo_waiting_for_winner"], run_id
            ):
                break
            await asyncio.sleep(0.5 if tty else 2.0)
    finally:
        await conn.close()
        if tty:
            sys.stdout.write("\n")


async def _complete(url: str, config: EngineConfig) -> None:
    """Close the run now its messages are final, as the daemon would within 10 seconds."""
    conn = await db.connect(url)
    try:
        await scheduler.complete_runs(conn, config.receipt_window)
    finally:
        await conn.close()


async def _outcome(url: str, run_id: int, say: Callable[[str], None]) -> None:
    conn = await db.connect(url)
    try:
        rows = await conn.fetch(QUERIES["demo_outcome_statuses"], run_id)
        totals = await conn.fetchrow(QUERIES["demo_outcome"], run_id)
        stopped = await conn.fetchval(QUERIES["demo_stopped_by_reply"])
        tables = await link_reports.run_tables(conn, run_id)
    finally:
        await conn.close()
    say(f"\noutcome of run {run_id} ({DEMO_CAMPAIGN}):")
    for row in rows:
        say(f"  {row['status']:<16} {row['n']:>6}")
    rate = totals["delivered"] / totals["accepted"] if totals["accepted"] else 0
    say(
        f"  recipients {totals['recipients']}, sent {totals['accepted']}, delivered "
        f"{totals['delivered']} ({rate:.1%})"
    )
    say(f"  cost of accepted messages {totals['cost']} credits")
    if totals["p50"] is not None:
        say(f"  time to delivery: median {totals['p50']:.1f}s, p95 {totals['p95']:.1f}s")
    say(f"  opted out by STOP reply during the campaign: {stopped}")
    for table in tables:
        say("\n" + render(Report(table.title, (table,)), "table").split("\n", 2)[2])
