"""Commands as a user types them (``engine.cli.main`` with captured output, or
``python -m engine``): control, the budget gate, listings, one-line errors, the embedded
database (the documentation's configuration examples are loaded by
tests/unit/test_docs_examples.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from engine import cli, scheduler
from engine.config import load_config
from engine.expander import Expander
from engine.simulator import RunningSimulator
from tests.e2e.conftest import SECRET
from tests.e2e.test_daemon import SETTLED, Engine, assert_once, free_port
from tests.integration.helpers import add_contacts, numbers

REPO = Path(__file__).resolve().parents[2]
ZONED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d [A-Z+-][A-Za-z0-9+-]*")

# engine run needs its simulator account to have a webhook secret (16+ characters)
SIM = (
    "providers:\n  simulator:\n    type: simulator\n"
    "    webhook_secret: a-long-enough-webhook-secret\n"
)


async def engine(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``engine ARGS`` through the real entry point (in a thread: it runs its own loop)."""
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def engine_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENGINE_CONFIG")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        text=True,
        timeout=120,
        **({"capture_output": True} | kwargs),
    )


def write_campaign(
    path: Path,
    *,
    provider: str = "simulator",
    budget: int | None = None,
    schedule: str = "now: true",
) -> Path:
    limits = f"limits:\n  budget: {budget}\n" if budget is not None else ""
    path.write_text(
        f"name: promo\nprovider: {provider}\nschedule:\n  {schedule}\n"
        "audience:\n  groups: [all]\n"
        f"message:\n  body: \"Hi {{{{ first_name | default('there') }}}}\"\n{limits}"
    )
    return path


async def expand_due(pool: asyncpg.Pool, config: Path | None = None) -> int:
    """What a daemon's scheduler does in its next second: fire, then expand one run."""
    loaded = load_config(config)
    async with pool.acquire() as conn:
        await scheduler.create_due_runs(conn, datetime.now(UTC), timedelta(hours=1))
    result = await Expander(pool, loaded, "test-expander").run_once()
    assert result is not None
    return result.run_id


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Wait until ``check`` is true (the caller asserts what it needs afterwards)."""
    deadline = time.monotonic() + within
    for _ in range(int(within * 5)):
        if await check() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


# --- pause and resume ---------------------------------------------------------------------


@pytest.mark.slow
async def test_pause_then_resume_and_the_run_completes(
    sim: tuple[RunningSimulator, int],
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    simulator, port = sim
    config = tmp_path / "engine.yaml"
    config.write_text(
        f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
        f"providers:\n  sim:\n    type: simulator\n    base_url: {simulator.url}\n"
        f"    rate: 50\n    webhook_secret: {SECRET}\n"
        "lease: 2s\nshutdown_grace: 1s\nreceipt_window: 2s\n"
    )
    phones = numbers(20)
    await add_contacts(conn, [{"phone": p} for p in phones])
    assert (
        await engine(
            capsys,
            "campaign",
            "apply",
            str(write_campaign(tmp_path / "promo.yaml", provider="sim")),
        )
    )[0] == 0
    run_id = await expand_due(pool, config)

    code, out, err = await engine(capsys, "campaign", "pause", "promo")
    assert (code, out, err) == (0, "promo: paused (1 run(s) in progress paused)\n", "")
    code, out, err = await engine(capsys, "campaign", "resume", "promo")
    assert (code, err) == (0, "")
    assert out == "promo: resumed (1 run(s) continue)\n"
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
        == "sending"
    )

    daemon = Engine(config, use_database)
    await daemon.start()
    await eventually(
        lambda: conn.fetchval(
            "SELECT status = 'completed' FROM campaign_runs WHERE id = $1", run_id
        ),
        60,
    )
    assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
    rows = await conn.fetch("SELECT status::text FROM messages WHERE run_id = $1", run_id)
    assert len(rows) == 20 and {r["status"] for r in rows} <= SETTLED
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
        == "completed"
    )
    assert_once(simulator, phones)


# --- the budget gate ----------------------------------------------------------------------


async def test_over_budget_run_cancels_its_messages_and_resume_sends_after_raising_it(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(5)])
    # a one-off far ahead, sent now by hand: applying it again does not fire it anew
    later = 'at: "2099-01-01 09:00"'
    path = write_campaign(tmp_path / "promo.yaml", budget=4, schedule=later)
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0
    assert (await engine(capsys, "campaign", "send", "promo"))[0] == 0
    run_id = await expand_due(pool)

    messages = await conn.fetch(
        "SELECT status::text, error_code, error_detail FROM messages WHERE run_id = $1", run_id
    )
    reason = "estimated cost 5 credits exceeds the budget of 4 credits"
    assert [tuple(m) for m in messages] == [("cancelled", "over_budget", reason)] * 5
    code, out, _ = await engine(capsys, "status")
    queues = out.split("queues:\n")[1].split("\n\n")[0]
    assert code == 0 and queues.splitlines()[1:] == []  # nothing shown due
    code, out, _ = await engine(capsys, "campaign", "runs", "promo")
    assert "over_budget" in out and "cancelled=5" in out

    code, out, err = await engine(capsys, "campaign", "resume", "promo")
    assert (code, out) == (1, "")
    assert err == (
        f"engine: run {run_id} of 'promo' is still over budget: {reason}; raise "
        "limits.budget in the campaign file, apply it, then resume\n"
    )

    write_campaign(path, budget=10, schedule=later)
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0
    code, out, err = await engine(capsys, "campaign", "resume", "promo")
    assert (code, err) == (0, "")
    assert out == f"run {run_id}: within budget now, 5 messages queued\n"
    run = await conn.fetchrow(
        "SELECT status::text, reason, counts FROM campaign_runs WHERE id = $1", run_id
    )
    assert (run["status"], run["reason"], run["counts"]) == ("sending", None, {"queued": 5})
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM messages WHERE run_id = $1 AND"
            " status = 'queued' AND error_code IS NULL",
            run_id,
        )
        == 5
    )


async def test_resume_leaves_an_over_budget_run_when_a_new_firing_replaces_it(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(5)])
    path = write_campaign(tmp_path / "promo.yaml", budget=4)
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0
    run_id = await expand_due(pool)
    write_campaign(path, budget=10)
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0  # fires anew
    code, out, _ = await engine(capsys, "campaign", "resume", "promo")
    assert code == 0 and f"run {run_id} stays over budget: the campaign fires anew at" in out
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM messages WHERE run_id = $1 AND status = 'queued'", run_id
        )
        == 0
    )


# --- listings -----------------------------------------------------------------------------


async def sent_by_hand_and_tested(
    conn: asyncpg.Connection, pool: asyncpg.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """A daily campaign sent once by hand to 3 contacts, then test-sent: (run id, apply's
    output)."""
    await add_contacts(conn, [{"phone": p} for p in numbers(3)])
    path = write_campaign(tmp_path / "promo.yaml", schedule='cron: "0 9 * * *"')
    code, applied, _ = await engine(capsys, "campaign", "apply", str(path))
    assert code == 0
    assert (await engine(capsys, "campaign", "send", "promo"))[0] == 0
    run_id = await expand_due(pool)
    assert (await engine(capsys, "campaign", "test", "promo", "--to", "+27821234567"))[0] == 0
    return run_id, applied


async def test_list_shows_the_last_real_run_not_a_test_send(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await sent_by_hand_and_tested(conn, pool, tmp_path, capsys)
    code, out, _ = await engine(capsys, "campaign", "list")
    assert code == 0
    [row] = out.splitlines()[1:]
    assert "queued=3" in row  # the manual run's counts, not the test send's queued=1


async def test_runs_list_and_report_name_both_costs(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await sent_by_hand_and_tested(conn, pool, tmp_path, capsys)
    for command in (["campaign", "list"], ["campaign", "runs", "promo"], ["report", "promo"]):
        code, out, _ = await engine(capsys, *command)
        assert code == 0
        assert "estimated cost" in out and "cost of accepted messages" in out, command


async def test_times_in_tables_say_their_zone(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id, applied = await sent_by_hand_and_tested(conn, pool, tmp_path, capsys)
    assert ZONED.search(applied.split("next run ")[1]), applied
    _, out, _ = await engine(capsys, "campaign", "list")
    assert len(ZONED.findall(out.splitlines()[1])) == 2  # next run and last run
    _, out, _ = await engine(capsys, "campaign", "runs", "promo")
    rows = out.splitlines()[1:]
    assert str(run_id) in rows[1] and all(ZONED.search(r) for r in rows)
    _, out, _ = await engine(capsys, "status")
    assert ZONED.search(out.split("runs in progress:")[1].split("queues:")[0])


# --- one-line errors ----------------------------------------------------------------------


async def test_port_in_use_is_one_line(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await asyncio.to_thread(
            engine_process, "simulator", "--port", str(port), cwd=tmp_path
        )
        (tmp_path / "engine.yaml").write_text(f"webhooks:\n  listen: 127.0.0.1:{port}\n{SIM}")
        daemon = await asyncio.to_thread(
            engine_process, "run", cwd=tmp_path, env={"DATABASE_URL": database_url}
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "address already in use" in result.stderr
    assert daemon.returncode == 1
    assert daemon.stderr.splitlines()[-1].startswith("engine: ")
    assert "address already in use" in daemon.stderr and "Traceback" not in daemon.stderr


def test_reader_gone_away_exits_quietly(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # `engine ... | head` after head has exited
    try:
        result = engine_process(
            "sms",
            "analyze",
            "hello",
            cwd=tmp_path,
            stdout=write,
            stderr=subprocess.PIPE,
            capture_output=False,
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://admin:hunter2hunter2@db.example.com:notaport/engine",
        "postgres://admin:hunter2hunter2@[::1/engine",
        "mysql://admin:hunter2hunter2@db.example.com/engine",
    ],
)
def test_malformed_database_url_is_one_line_without_the_password(tmp_path: Path, url: str) -> None:
    result = engine_process("campaign", "list", cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.startswith("engine: malformed database URL ")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr and "admin:***@" in result.stderr
    debug = engine_process("--debug", "campaign", "list", cwd=tmp_path, env={"DATABASE_URL": url})
    assert "Traceback" in debug.stderr


def test_password_in_query_parameters_is_redacted(tmp_path: Path) -> None:
    url = "postgresql://admin@127.0.0.1:1/engine?sslmode=disable&password=hunter2hunter2"
    result = engine_process("campaign", "list", cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr and "password=***" in result.stderr


# --- the embedded database ----------------------------------------------------------------


@pytest.mark.embedded_only
def test_embedded_database_created_now_is_named_and_refused_until_migrated(tmp_path: Path) -> None:
    pgdata = (tmp_path / ".engine" / "pgdata").resolve()
    try:
        first = engine_process("campaign", "list", cwd=tmp_path)
        assert first.returncode == 1
        assert first.stderr.splitlines() == [
            f"engine: created a new embedded PostgreSQL database in {pgdata} (no database_url"
            " in engine.yaml, no $DATABASE_URL)",
            f"engine: the database at {pgdata} has no tables; run `engine db migrate`",
        ]
        again = engine_process("groups", "list", cwd=tmp_path)
        assert again.stderr == (
            f"engine: the database at {pgdata} has no tables; run `engine db migrate`\n"
        )
        assert engine_process("db", "migrate", cwd=tmp_path).returncode == 0
        listed = engine_process("campaign", "list", cwd=tmp_path)
        assert (listed.returncode, listed.stderr) == (0, "")
    finally:
        engine_process("db", "stop", cwd=tmp_path)


async def test_engine_run_migrates_an_empty_database(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "engine.yaml").write_text(f"webhooks:\n  listen: 127.0.0.1:{free_port()}\n{SIM}")
    daemon = Engine(tmp_path / "engine.yaml", empty_database_url)
    await daemon.start()
    conn = await asyncpg.connect(empty_database_url)
    try:
        await eventually(lambda: conn.fetchval("SELECT to_regclass('workers') IS NOT NULL"), 30)
        await eventually(lambda: conn.fetchval("SELECT count(*) > 0 FROM workers"), 30)
        assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
        assert await conn.fetchval("SELECT count(*) FROM workers") == 1
    finally:
        await conn.close()
