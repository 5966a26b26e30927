"""Routes in engine.yaml, the route chooser and the failure counter, through the command
line where a user meets them (``engine campaign validate``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from engine import cli
from engine.config import parse_config
from engine.errors import ConfigError
from engine.health_rules import FailureTracker, HealthConfig
from engine.providers.base import SendResult

ACCOUNTS = """\
providers:
  zc-main:
    type: simulator
    webhook_secret: sixteen-chars-secret
    rate: 10/s
    pricing: {prefixes: {"2782": 0.10, "2783": 0.50}}
  zenvia-br:
    type: simulator
    webhook_secret: sixteen-chars-secret
    rate: 30/s
    pricing: {prefixes: {"2782": 0.30, "2783": 0.20}}
"""

CAMPAIGN = """\
name: spring
provider: {provider}
schedule: {{now: true}}
audience: {{groups: [all]}}
message: {{body: "Hi"}}
"""


def write(tmp_path: Path, routes: str, provider: str = "za-main") -> tuple[Path, Path]:
    config = tmp_path / "engine.yaml"
    config.write_text(ACCOUNTS + routes)
    campaign = tmp_path / "spring.yaml"
    campaign.write_text(CAMPAIGN.format(provider=provider))
    return config, campaign


def validate(config: Path, campaign: Path) -> int:
    return cli.main(["--config", str(config), "campaign", "validate", str(campaign)])


def test_a_campaign_may_name_a_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, campaign = write(
        tmp_path,
        "routes:\n  za-main:\n    strategy: cheapest\n    accounts: [zc-main, zenvia-br]\n",
    )
    assert validate(config, campaign) == 0
    assert capsys.readouterr().out == f"{campaign}: ok (spring)\n"


def test_a_campaign_naming_neither_account_nor_route_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, campaign = write(
        tmp_path, "routes:\n  za-main:\n    accounts: [zc-main]\n", provider="za-backup"
    )
    assert validate(config, campaign) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{campaign}:2:11: provider: unknown provider account 'za-backup'")
    assert "za-main" in err  # the routes are among the names offered


@pytest.mark.parametrize(
    ("routes", "where", "message"),
    [
        (
            "routes:\n  za-main:\n    accounts: [zc-main, zc-backup]\n",
            "14:25: routes.za-main.accounts.1",
            "unknown provider account 'zc-backup' (known: zc-main, zenvia-br)",
        ),
        (
            "routes:\n  za-main:\n    accounts: []\n",
            "14:15: routes.za-main.accounts",
            "should have at least 1 item",
        ),
        (
            "routes:\n  zc-main:\n    accounts: [zenvia-br]\n",
            "13:3: routes.zc-main",
            "'zc-main' is both a provider account and a route",
        ),
        (
            "routes:\n  za-main:\n    strategy: cheapest-first\n    accounts: [zc-main]\n",
            "14:15: routes.za-main.strategy",
            "Input should be 'priority', 'cheapest' or 'spread'",
        ),
    ],
    ids=["unknown-account", "empty-list", "account-and-route", "unknown-strategy"],
)
def test_route_errors_name_the_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], routes: str, where: str, message: str
) -> None:
    config, campaign = write(tmp_path, routes)
    assert validate(config, campaign) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{config}:{where}" in err and message in err


def test_cheapest_chooses_per_prefix_among_the_accounts_up() -> None:
    config = parse_config(
        Path("engine.yaml"),
        ACCOUNTS + "routes:\n  za:\n    strategy: cheapest\n    accounts: [zc-main, zenvia-br]\n",
        {},
    )
    router = config.router("za")
    assert router is not None
    assert router.choose("+27821234567") == "zc-main"
    assert router.choose("+27831234567") == "zenvia-br"
    assert router.choose("+27831234567", {"zc-main"}) == "zc-main"  # the other is down
    assert router.choose("+27831234567", set()) is None


def test_priority_takes_the_first_account_up_and_spread_shares_by_rate() -> None:
    text = (
        "routes:\n  first:\n    accounts: [zc-main, zenvia-br]\n"
        "  both:\n    strategy: spread\n    accounts: [zc-main, zenvia-br]\n"
    )
    config = parse_config(Path("engine.yaml"), ACCOUNTS + text, {})
    first, both = config.router("first"), config.router("both")
    assert first is not None and both is not None
    assert first.choose("+2782") == "zc-main"
    assert first.choose("+2782", {"zenvia-br"}) == "zenvia-br"
    assert first.rate({"zc-main", "zenvia-br"}) == 10
    picks = [both.choose("+2782") for _ in range(40)]
    assert picks.count("zenvia-br") == 30 and picks.count("zc-main") == 10  # 30/s and 10/s
    assert both.rate({"zc-main", "zenvia-br"}) == 40


def test_routes_and_health_have_defaults() -> None:
    config = parse_config(Path("engine.yaml"), ACCOUNTS, {})
    assert config.routes == {}
    assert config.health.down_after == 5 and config.health.cooloff == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"health\.down_after"):
        parse_config(Path("engine.yaml"), ACCOUNTS + "health: {down_after: 0}\n", {})


def test_the_failure_counter() -> None:
    tracker = FailureTracker(HealthConfig(down_after=3, window=10, failure_ratio=0.6))
    refused = SendResult.retry("connect_error", "refused")
    ok = SendResult.accepted("id-1")
    assert tracker.observe([refused, refused]) is None
    assert tracker.observe([ok]) is None  # a success ends the run
    assert tracker.observe([refused, refused]) is None
    why = tracker.observe([refused])
    assert why is not None and why.startswith("3 failures in a row, last connect_error")
    # a 429 within the Retry-After budget says nothing; beyond it, it is a failure
    tracker.reset()
    assert tracker.observe([SendResult.retry("429", "slow down", 5.0)] * 5) is None
    assert tracker.observe([SendResult.retry("429", "slow down", 600.0)] * 3) is not None
    # a window mostly failing, without a run long enough
    tracker = FailureTracker(HealthConfig(down_after=100, window=10, failure_ratio=0.6))
    for _ in range(3):
        assert tracker.observe([refused, refused, ok]) is None
    assert tracker.observe([refused]) is not None  # 7 of the last 10
    # an ambiguous 5xx or timeout counts against the account (the message stays unknown)
    sick = FailureTracker(HealthConfig(down_after=2))
    assert sick.observe([SendResult.unknown("502", "bad gateway")]) is None
    assert sick.observe([SendResult.unknown("timeout", "no answer in 10s")]) is not None
    assert (
        FailureTracker(HealthConfig(down_after=1)).observe(
            [SendResult.unknown("connection_lost", "reset")]
        )
        is None
    )
    # a rejection is the message's fault: the account answered
    assert (
        FailureTracker(HealthConfig(down_after=1)).observe(
            [SendResult.rejected("invalid", "bad number")]
        )
        is None
    )
