"""engine.yaml: discovery, ${VAR} substitution, validation errors with positions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.config import EngineConfig, config_path, load_config, parse_config
from engine.errors import ConfigError
from engine.values import parse_duration, parse_period_cap, parse_rate

FULL = """\
database_url: ${DB_URL}
data_dir: /var/lib/engine
default_region: za
webhooks:
  listen: 0.0.0.0:${PORT:-8080}
  public_url: https://engine.example.com
providers:
  sim:
    type: simulator
    rate: 50/s
    concurrency: 4
    timeout: 5s
    webhook_secret: ${SIM_SECRET}
pricing:
  default: 0.35
  prefixes:
    "27": 0.25
    "2782": 0.2
misfire_grace: 30m
"""


def parse(text: str, env: dict[str, str] | None = None) -> EngineConfig:
    return parse_config(Path("engine.yaml"), text, env or {})


def test_full_config_parses_with_environment_values() -> None:
    config = parse(
        FULL, {"DB_URL": "postgresql://u:pw@db/engine", "SIM_SECRET": "s3-sixteen-chars"}
    )
    assert config.database_url is not None
    assert config.database_url.get_secret_value() == "postgresql://u:pw@db/engine"
    assert config.webhooks.port == 8080
    assert config.default_region == "ZA"
    account = config.providers["sim"]
    assert account.rate.per_second == 50
    assert account.timeout == timedelta(seconds=5)
    assert account.webhook_secret is not None
    assert account.webhook_secret.get_secret_value() == "s3-sixteen-chars"
    assert config.pricing.prefixes["2782"] == Decimal("0.2")
    assert config.misfire_grace == timedelta(minutes=30)


def test_default_value_used_when_variable_unset_and_plain_scalars_retyped() -> None:
    config = parse(FULL, {"DB_URL": "x", "SIM_SECRET": "s" * 16, "PORT": "9999"})
    assert config.webhooks.listen == "0.0.0.0:9999"


def test_secrets_are_never_printed() -> None:
    config = parse(
        FULL, {"DB_URL": "postgresql://u:hunter2@db/x", "SIM_SECRET": "topsecret-topsecret"}
    )
    shown = repr(config) + str(config) + config.model_dump_json()
    assert "hunter2" not in shown
    assert "topsecret" not in shown


def test_missing_variable_names_variable_file_and_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse(FULL, {"DB_URL": "x"})
    assert str(err.value) == (
        "engine.yaml:13:21: providers.sim.webhook_secret: "
        "environment variable SIM_SECRET is not set"
    )


def test_unknown_keys_are_reported_with_their_position() -> None:
    text = "webhooks:\n  listen: 127.0.0.1:80\n  lisen: x\nprovders: {}\n"
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value).splitlines() == [
        "engine.yaml:3:3: webhooks.lisen: unknown field",
        "engine.yaml:4:1: provders: unknown field",
    ]


def test_unknown_account_key_and_type() -> None:
    text = "providers:\n  a:\n    type: simulator\n    tokn: x\n  b:\n    type: nope\n"
    with pytest.raises(ConfigError) as err:
        parse(text)
    lines = str(err.value).splitlines()
    assert lines[0] == "engine.yaml:4:5: providers.a.tokn: unknown field"
    from engine.providers import ACCOUNT_TYPES

    known = ", ".join(sorted(ACCOUNT_TYPES))
    assert lines[1] == f"engine.yaml:6:5: providers.b: type must be one of {known}, got 'nope'"
    assert "simulator" in known


def test_bad_values_point_at_the_value() -> None:
    with pytest.raises(ConfigError) as err:
        parse("webhooks:\n  listen: nowhere\nmisfire_grace: soon\n")
    lines = str(err.value).splitlines()
    assert lines[0] == "engine.yaml:2:11: webhooks.listen: expected host:port, got 'nowhere'"
    assert lines[1].startswith("engine.yaml:3:16: misfire_grace: not a duration: 'soon'")


def test_yaml_syntax_error_names_file_and_line() -> None:
    expected = r"^engine\.yaml:3:1: invalid YAML: expected the node content"
    with pytest.raises(ConfigError, match=expected):
        parse("webhooks:\n  listen: [\n")


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.database_url is None
    assert config.data_dir == Path(".engine")
    assert list(config.providers) == ["simulator"]


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_path_precedence() -> None:
    assert config_path("a.yaml", {"ENGINE_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert config_path(None, {"ENGINE_CONFIG": "b.yaml"}) == Path("b.yaml")
    assert config_path(None, {}) == Path("engine.yaml")


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("default_region: BR\n")
    assert load_config(None, env={"ENGINE_CONFIG": str(path)}).default_region == "BR"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("10s", 10),
        ("5m", 300),
        ("6h", 21600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("250ms", 0.25),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "-5s", "", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "per_second"), [("10/s", 10), ("600/min", 10), ("3600/h", 1), (25, 25)]
)
def test_rates(text: str | int, per_second: float) -> None:
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["10", "ten/s", "0/s", "5/fortnight", -1])
def test_bad_rates(text: str | int) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_frequency_cap() -> None:
    assert parse_period_cap("2/24h") == (2, timedelta(hours=24))
    with pytest.raises(ValueError, match="frequency cap"):
        parse_period_cap("0/1h")


@pytest.mark.parametrize("text", ["10/s", "600/min", "1000/h", "2.5/s"])
def test_rate_text_round_trips(text: str) -> None:
    assert str(parse_rate(text)) == text
    assert parse_rate(str(parse_rate(text))) == parse_rate(text)


SECRETS = """\
webhooks:
  reports_token: ${TOKEN}
providers:
  zc:
    type: zoomconnect
    email: ops@example.com
    token: t
    webhook_secret: ${ZC_SECRET}
"""


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_secret_from_the_environment_is_an_error_naming_key_and_line(empty: str) -> None:
    """``${X}`` with X set to "" would leave the account (or the reports) without a secret."""
    with pytest.raises(ConfigError) as err:
        parse(SECRETS, {"TOKEN": empty, "ZC_SECRET": empty})
    lines = str(err.value).splitlines()
    assert lines[0].startswith("engine.yaml:2:18: webhooks.reports_token: is ")
    assert lines[1].startswith("engine.yaml:8:21: providers.zc.webhook_secret: is ")


def test_a_short_secret_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse(SECRETS, {"TOKEN": "x" * 15, "ZC_SECRET": "y" * 16})
    assert str(err.value) == (
        "engine.yaml:2:18: webhooks.reports_token: is too short: use at least 16 characters"
    )
    config = parse(SECRETS, {"TOKEN": "x" * 16, "ZC_SECRET": "y" * 16})
    assert config.webhooks.reports_token is not None


def test_a_simulator_account_in_a_file_needs_a_secret() -> None:
    with pytest.raises(ConfigError) as err:
        parse("providers:\n  sim:\n    type: simulator\n")
    assert str(err.value).startswith(
        "engine.yaml:3:5: providers.sim.webhook_secret: a simulator account needs a webhook_secret"
    )


def test_reports_public_takes_only_loopback() -> None:
    assert parse("webhooks:\n  reports_public: loopback\n").webhooks.reports_public == "loopback"
    assert parse("webhooks: {}\n").webhooks.reports_public is None
    with pytest.raises(ConfigError, match=r"webhooks\.reports_public"):
        parse("webhooks:\n  reports_public: everyone\n")
