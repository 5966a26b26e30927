"""Account health as an operator meets it: `engine run` pauses an account whose credentials
the provider refuses, `engine status`, /healthz and /metrics say so, and `engine providers
check` resumes it (issue 17 item 1)."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.simulator import RunningSimulator
from engine.simulator.accounts import ACCOUNTS
from tests.e2e.conftest import SECRET
from tests.e2e.test_cli_commands import engine, eventually, expand_due, write_campaign
from tests.e2e.test_daemon import Engine, assert_once
from tests.integration.helpers import add_contacts, numbers


def write_config(tmp_path: Path, simulator: RunningSimulator, port: int) -> Path:
    config = tmp_path / "engine.yaml"
    config.write_text(
        f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
        f"providers:\n  sim:\n    type: simulator\n    base_url: {simulator.url}\n"
        f"    rate: 50\n    webhook_secret: {SECRET}\n"
        "lease: 2s\nshutdown_grace: 1s\nreceipt_window: 2s\n"
    )
    return config


async def test_providers_check_says_whether_the_account_authenticates(
    sim: tuple[RunningSimulator, int],
    conn: asyncpg.Connection,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    simulator, port = sim
    write_config(tmp_path, simulator, port)
    await conn.execute(
        "INSERT INTO account_health (account, up, reason, retry_at)"
        " VALUES ('sim', false, 'auth', now() + interval '1 hour')"
    )

    simulator.app[ACCOUNTS].set("simulator", valid=False)
    code, out, err = await engine(capsys, "providers", "check", "sim")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "HTTP 401" in err and "(auth)" in err
    assert not await conn.fetchval("SELECT up FROM account_health WHERE account = 'sim'")

    simulator.app[ACCOUNTS].set("simulator", valid=True, credit=False)
    code, out, err = await engine(capsys, "providers", "check", "sim")
    assert code == 1 and "HTTP 402" in err and "(credit)" in err

    simulator.app[ACCOUNTS].set("simulator", credit=True)
    code, out, err = await engine(capsys, "providers", "check", "sim")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "sim: GET /sim/v1/account: HTTP 200",
        "sim: was paused; the daemons resume sending now",
    ]
    assert await conn.fetchval("SELECT up FROM account_health WHERE account = 'sim'")

    code, out, err = await engine(capsys, "providers", "check", "nope")
    assert (code, err) == (1, "engine: no provider account 'nope' in the configuration\n")


@pytest.mark.slow
async def test_a_refused_account_pauses_shows_everywhere_and_resumes_after_check(
    sim: tuple[RunningSimulator, int],
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    session: aiohttp.ClientSession,
) -> None:
    simulator, port = sim
    config = write_config(tmp_path, simulator, port)
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
    simulator.app[ACCOUNTS].set("simulator", valid=False)  # the credentials expired

    daemon = Engine(config, use_database)
    await daemon.start()
    try:
        await eventually(
            lambda: conn.fetchval("SELECT NOT up FROM account_health WHERE account = 'sim'"), 30
        )
        url = f"http://127.0.0.1:{port}"
        async with session.get(f"{url}/healthz") as resp:
            assert resp.status == 200  # the daemon is healthy; the account is not
            health = await resp.json()
        assert [(d["account"], d["reason"]) for d in health["accounts_down"]] == [("sim", "auth")]
        async with session.get(f"{url}/metrics") as resp:
            assert 'engine_account_up{account="sim"} 0.0' in await resp.text()

        code, out, _ = await engine(capsys, "status")
        assert code == 0
        [line] = [row for row in out.splitlines() if row.startswith("sim ") and "down" in row]
        assert "auth: unauthorized" in line
        counts = await conn.fetch(
            "SELECT DISTINCT status::text FROM messages WHERE run_id = $1", run_id
        )
        assert {r["status"] for r in counts} == {"queued"}  # nobody failed

        simulator.app[ACCOUNTS].set("simulator", valid=True)  # renewed
        assert (await engine(capsys, "providers", "check", "sim"))[0] == 0
        await eventually(
            lambda: conn.fetchval(
                "SELECT status = 'completed' FROM campaign_runs WHERE id = $1", run_id
            ),
            60,
        )
        async with session.get(f"{url}/metrics") as resp:
            assert 'engine_account_up{account="sim"} 1.0' in await resp.text()
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
    assert "account sim cannot send (auth: unauthorized" in daemon.stderr
    # every message was taken by the provider (a "failed" here can only be the simulator's
    # own delivery report): none was refused at send
    assert not await conn.fetchval(
        "SELECT count(*) FROM messages WHERE run_id = $1 AND provider_message_id IS NULL", run_id
    )
    assert_once(simulator, phones)
