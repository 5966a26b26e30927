"""A route as an operator meets it: `engine run` fails a campaign over from an account in
an outage to the next one, `engine status`, /metrics and the log say so, and the account
gets its traffic back once its outage ends (issue 21)."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from engine.simulator.accounts import ACCOUNTS
from tests.e2e.conftest import SECRET
from tests.e2e.test_cli_commands import engine, eventually, expand_due, write_campaign
from tests.e2e.test_daemon import Engine
from tests.integration.helpers import add_contacts, numbers


def write_config(
    tmp_path: Path, main: RunningSimulator, backup: RunningSimulator, port: int
) -> Path:
    config = tmp_path / "engine.yaml"
    account = "    type: simulator\n    rate: 50\n    webhook_secret: " + SECRET + "\n"
    config.write_text(
        f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
        "providers:\n"
        f"  main:\n    base_url: {main.url}\n{account}"
        f"  backup:\n    base_url: {backup.url}\n{account}"
        "routes:\n  za:\n    strategy: priority\n    accounts: [main, backup]\n"
        "health:\n  down_after: 3\n  cooloff: 1s\n  cooloff_max: 2s\n"
        "lease: 2s\nshutdown_grace: 1s\nreceipt_window: 2s\n"
    )
    return config


@pytest.mark.slow
async def test_a_route_fails_over_shows_it_and_recovers(
    sim: tuple[RunningSimulator, int],
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    session: aiohttp.ClientSession,
) -> None:
    main, port = sim
    settings = SimulatorSettings(
        seed=6,
        default=FamilySettings(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/backup", webhook_secret=SECRET
        ),
    )
    async with await serve(settings, "127.0.0.1", 0) as backup:
        config = write_config(tmp_path, main, backup, port)
        phones = numbers(150)
        await add_contacts(conn, [{"phone": p} for p in phones])
        promo = write_campaign(tmp_path / "promo.yaml", provider="za")
        assert (await engine(capsys, "campaign", "apply", str(promo)))[0] == 0
        run_id = await expand_due(pool, config)
        main.app[ACCOUNTS].set("simulator", up=False)  # main's provider has an outage

        daemon = Engine(config, use_database)
        await daemon.start()
        try:
            await eventually(
                lambda: conn.fetchval(
                    "SELECT count(*) = 0 FROM messages WHERE run_id = $1"
                    " AND status IN ('queued', 'sending')",
                    run_id,
                ),
                60,
            )
            code, out, _ = await engine(capsys, "status")
            assert code == 0
            [line] = [r for r in out.splitlines() if r.startswith("main ") and "down" in r]
            # why: its sends failed, and (once probed) what the probe met
            assert "failing: " in line and "500" in line and "outage" in line
            assert "za     priority  main (down), backup" in out
            url = f"http://127.0.0.1:{port}"
            async with session.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
            assert 'engine_account_up{account="main"} 0.0' in metrics
            assert 'engine_reroutes_total{from="main",to="backup"}' in metrics

            main.app[ACCOUNTS].set("simulator", up=True)  # the outage ends
            await eventually(
                lambda: conn.fetchval("SELECT up FROM account_health WHERE account = 'main'"), 30
            )
            assert await conn.fetchval("SELECT up FROM account_health WHERE account = 'main'")
        finally:
            assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr
        assert daemon.stderr.count("account main cannot send (failing") == 1  # one line
        assert "account main is up again" in daemon.stderr
        carried = await conn.fetch(
            "SELECT account, status::text, count(*) AS n FROM messages WHERE run_id = $1"
            " GROUP BY 1, 2",
            run_id,
        )
        assert {(r["account"], r["status"]) for r in carried} <= {
            ("backup", "sent"),
            ("backup", "delivered"),
            ("backup", "undelivered"),
        }
        assert sum(r["n"] for r in carried) == len(phones)
        assert set(backup.stats.per_number) == set(phones)
        assert max(backup.stats.per_number.values()) == 1
        assert main.stats.per_number == {}  # the outage took nothing


async def test_preview_splits_a_cheapest_route_per_account(
    conn: asyncpg.Connection,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    account = "    type: simulator\n    webhook_secret: " + SECRET + "\n"
    (tmp_path / "engine.yaml").write_text(
        "providers:\n"
        f"  zc-main:\n{account}    pricing: {{prefixes: {{'2782': 0.10, '2783': 0.50}}}}\n"
        f"  zenvia-br:\n{account}    pricing: {{prefixes: {{'2782': 0.30, '2783': 0.20}}}}\n"
        "routes:\n  za:\n    strategy: cheapest\n    accounts: [zc-main, zenvia-br]\n"
    )
    vodacom, mtn = numbers(3, prefix="+2782"), numbers(2, prefix="+2783")
    await add_contacts(conn, [{"phone": p} for p in vodacom + mtn])
    promo = write_campaign(tmp_path / "promo.yaml", provider="za")

    code, out, err = await engine(capsys, "campaign", "preview", str(promo))
    assert (code, err) == (0, "")
    assert "estimated cost: 0.7 credits" in out
    assert out.endswith(
        "per account (route za, every account up):\n"
        "  zc-main: 3 messages, 0.3 credits\n"
        "  zenvia-br: 2 messages, 0.4 credits\n"
    )
