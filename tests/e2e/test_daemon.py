"""`engine run` and `engine demo` as ops run them: subprocesses, signals, crashes.

Each test asserts from the simulator's own counts that no number received a message twice,
and that every recipient ends in a status that accounts for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.config import EngineConfig
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from tests.integration.helpers import add_contacts, campaign, numbers
from tests.net import free_port

REPO = Path(__file__).resolve().parents[2]
SETTLED = {
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "unknown",
    "expired",
    "cancelled",
    "suppressed",
}

pytestmark = pytest.mark.slow


def write_config(path: Path, sim_url: str, port: int, rate: int) -> Path:
    path.write_text(
        f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
        "providers:\n  sim:\n    type: simulator\n"
        f"    base_url: {sim_url}\n    rate: {rate}\n    concurrency: 4\n"
        "    webhook_secret: s3cret-s3cret-s3cret\n"
        "lease: 2s\nshutdown_grace: 1s\n"
    )
    return path


class Engine:
    """One `engine run` subprocess."""

    def __init__(self, config: Path, database_url: str, *args: str) -> None:
        self.args = ["--config", str(config), "run", *args]
        self.env = {**os.environ, "DATABASE_URL": database_url}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine",
            *self.args,
            env=self.env,
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def signal(self, signum: int) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        _, err = await asyncio.wait_for(self.proc.communicate(), 30)
        self.stderr = err.decode()
        assert self.proc.returncode is not None
        return self.proc.returncode


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[RunningSimulator, int]]:
    port = free_port()
    settings = SimulatorSettings(
        seed=3,
        default=FamilySettings(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/sim",
            webhook_secret="s3cret-s3cret-s3cret",
            latency=(0.005, 0.02),
            receipt_delay=(0.05, 0.3),
            duplicates=0.1,
            out_of_order=0.1,
        ),
    )
    async with await serve(settings, "127.0.0.1", 0) as running:
        yield running, port


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status::text, count(*) AS n FROM messages GROUP BY 1")
    return {r["status"]: r["n"] for r in rows}


async def wait_for(conn: asyncpg.Connection, predicate: Any, within: float) -> dict[str, int]:
    deadline = time.monotonic() + within
    while True:
        counts = await statuses(conn)
        if predicate(counts) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def start_campaign(conn: asyncpg.Connection, config: Path, count: int) -> list[str]:
    from engine import campaigns

    phones = numbers(count)
    await add_contacts(conn, [{"phone": p} for p in phones])
    loaded = EngineConfig.model_validate({"providers": {"sim": {"type": "simulator"}}})
    await campaigns.apply_campaign(conn, campaign(provider="sim"), config, loaded)
    return phones


def assert_once(sim: RunningSimulator, phones: list[str]) -> None:
    assert set(sim.stats.per_number) <= set(phones)
    assert max(sim.stats.per_number.values(), default=0) <= 1


async def test_sigterm_mid_campaign_then_restart(
    sim: tuple[RunningSimulator, int], conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    simulator, port = sim
    config = write_config(tmp_path / "engine.yaml", simulator.url, port, rate=40)
    phones = await start_campaign(conn, config, 150)
    daemon = Engine(config, database_url)
    await daemon.start()
    await wait_for(conn, lambda c: sum(n for s, n in c.items() if s in SETTLED) >= 30, 30)
    assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
    mid = await statuses(conn)
    assert "sending" not in mid  # finished or settled within the grace period
    assert mid.get("queued", 0) > 0
    again = Engine(config, database_url)
    await again.start()
    final = await wait_for(conn, lambda c: not ({"queued", "sending"} & set(c)), 60)
    assert await again.signal(signal.SIGTERM) == 0, again.stderr
    assert sum(final.values()) == 150
    assert set(final) <= SETTLED
    assert_once(simulator, phones)


async def test_kill_9_mid_campaign_then_restart(
    sim: tuple[RunningSimulator, int], conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    simulator, port = sim
    config = write_config(tmp_path / "engine.yaml", simulator.url, port, rate=40)
    phones = await start_campaign(conn, config, 150)
    daemon = Engine(config, database_url)
    await daemon.start()
    await wait_for(conn, lambda c: sum(n for s, n in c.items() if s in SETTLED) >= 30, 30)
    assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL, daemon.stderr
    again = Engine(config, database_url)
    await again.start()
    final = await wait_for(conn, lambda c: not ({"queued", "sending"} & set(c)), 60)
    assert await again.signal(signal.SIGTERM) == 0, again.stderr
    assert sum(final.values()) == 150
    assert set(final) <= SETTLED
    # at most about a second of claimed sends could be ambiguous, never the whole queue
    assert final.get("unknown", 0) <= 45
    assert_once(simulator, phones)


async def test_two_daemons_share_one_accounts_rate(
    sim: tuple[RunningSimulator, int], conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    simulator, port = sim
    config = write_config(tmp_path / "engine.yaml", simulator.url, port, rate=20)
    other = write_config(tmp_path / "other.yaml", simulator.url, free_port(), rate=20)
    first = Engine(config, database_url)
    second = Engine(other, database_url, "--only", "dispatcher")
    await first.start()
    await second.start()
    for _ in range(150):  # both registered, then one more heartbeat to split the rate
        if await conn.fetchval("SELECT count(*) FROM workers WHERE stopped_at IS NULL") == 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.5)
    phones = await start_campaign(conn, config, 120)
    started = time.monotonic()
    final = await wait_for(conn, lambda c: not ({"queued", "sending"} & set(c)) and c, 60)
    elapsed = time.monotonic() - started
    workers = await conn.fetch("SELECT worker, count(*) FROM messages GROUP BY 1")
    assert await first.signal(signal.SIGTERM) == 0, first.stderr
    assert await second.signal(signal.SIGTERM) == 0, second.stderr
    assert sum(final.values()) == 120
    assert len(workers) == 2  # both daemons sent
    # 120 messages at a shared 20/s: two 10-message bursts, then 20/s together
    assert elapsed >= (120 - 20) / 20 - 0.5, (first.stderr[-3000:], second.stderr[-3000:])
    assert_once(simulator, phones)


async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENGINE_CONFIG")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "demo",
        "--campaigns",
        str(REPO / "campaigns"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "outcome of run" in text
    assert "most to one number: 1" in text
    assert "opted out by STOP reply during the campaign: 1" in text
    outcome = text.split("outcome of run", 1)[1]
    assert "  queued " not in outcome
    assert "  sending " not in outcome
    assert "  delivered " in outcome


async def test_demo_outside_the_repository_says_so_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENGINE_CONFIG")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "demo",
        "--campaigns",
        str(tmp_path / "nowhere"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert "needs campaigns/" in err.decode()
    assert "imported" not in out.decode()
    assert not (tmp_path / ".engine").exists()  # no database was started
