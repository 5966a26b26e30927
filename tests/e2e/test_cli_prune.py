"""``engine db prune`` as a user types it: dry run, the question, one-line errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from engine import cli
from tests.integration.test_reports import add_campaign, add_run, insert_messages, plain


async def engine(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def old_run(conn: asyncpg.Connection) -> int:
    ended = datetime.now(UTC) - timedelta(days=100)
    run_id = await add_run(conn, await add_campaign(conn, "spring"), ended)
    await insert_messages(conn, plain(run_id, 12, 5000, 2))
    await conn.execute("UPDATE campaign_runs SET finished_at = $1 WHERE id = $2", ended, run_id)
    return run_id


async def test_dry_run_counts_and_deletes_nothing(
    conn: asyncpg.Connection, use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await old_run(conn)
    code, out, err = await engine(capsys, "db", "prune", "--older-than", "90d", "--dry-run")
    assert (code, err) == (0, "")
    assert out.startswith("would prune 1 runs that ended before ")
    assert out.endswith(": 12 messages, 0 receipts, 0 refused webhook calls\n")
    assert await conn.fetchval("SELECT count(*) FROM messages") == 12


async def test_without_yes_from_a_script_nothing_changes(
    conn: asyncpg.Connection, use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await old_run(conn)
    code, out, err = await engine(capsys, "db", "prune", "--older-than", "90d")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "pass --yes" in err
    assert await conn.fetchval("SELECT count(*) FROM messages") == 12


async def test_prune_with_yes_keeps_the_outcome(
    conn: asyncpg.Connection, use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = await old_run(conn)
    before = await conn.fetchrow("SELECT * FROM campaign_outcomes WHERE run_id = $1", run_id)
    code, out, err = await engine(capsys, "db", "prune", "--older-than", "90d", "--yes")
    assert (code, err) == (0, "")
    assert out == (
        "pruned 1 runs: 12 messages, 0 receipts, 0 refused webhook calls"
        " (their outcomes stay in campaign_outcomes)\n"
    )
    assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    after = await conn.fetchrow("SELECT * FROM campaign_outcomes WHERE run_id = $1", run_id)
    assert dict(after) == dict(before)
    code, out, _ = await engine(capsys, "db", "prune", "--older-than", "90d", "--yes")
    assert (code, out) == (0, "nothing ended before " + out.split("before ", 1)[1])


async def test_a_cutoff_under_a_day_is_one_line(
    use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await engine(capsys, "db", "prune", "--older-than", "12h", "--yes")
    assert (code, out) == (1, "")
    assert err == (
        "engine: --older-than must be at least 1d: keep more than the longest frequency"
        " cap's period\n"
    )


async def test_an_age_that_is_no_duration_is_a_usage_error(
    use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await engine(capsys, "db", "prune", "--older-than", "soon")
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith(
        "argument --older-than: not a duration: 'soon' (use e.g. 30s, 10m, 6h, 1d)"
    )
