"""``engine.yaml``: where it is found, how it is read, and what it may say.

The file is found at ``--config PATH``, else ``$ENGINE_CONFIG``, else ``./engine.yaml``;
no file means the defaults (embedded PostgreSQL, only the simulator account).
``${VAR}`` and ``${VAR:-default}`` in any value are replaced from the environment
before validation; a variable that is not set is an error naming it and its line.
Unknown keys are errors. Secrets are ``SecretStr`` and print as ``**********``.

Secrets written in the file are checked after validation (:func:`secret_problems`): a
``webhook_secret`` or ``webhooks.reports_token`` that is present but empty (``${X}`` with
``X`` set to ``""`` included) or shorter than :data:`MIN_SECRET` characters is an error,
and so is a ``simulator`` account without a ``webhook_secret`` (its webhook would take
anyone's receipts and opt-outs; only ``engine demo`` and tests build such accounts, in
code). With no file the defaults hold one secret-less simulator account: commands that
only read the database work, and ``engine run`` refuses to open its webhook listener
(:mod:`engine.webhooks`) with a one-line hint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator

from engine import pg_settings, yamldoc
from engine.errors import ConfigError
from engine.health_rules import HealthConfig
from engine.pricing import PriceTable
from engine.providers import ACCOUNT_TYPES, AnyAccount, default_accounts
from engine.providers.base import PricingTable
from engine.routes import RouteConfig, Router, route_problems
from engine.strict import Strict
from engine.values import Duration
from engine.yamldoc import yaml_error

DEFAULT_PATH = Path("engine.yaml")
#: the shortest webhook secret or reports token accepted from a config file
MIN_SECRET = 16


class WebhooksConfig(Strict):
    """The daemon's HTTP listener for provider callbacks, health and metrics."""

    listen: str = "127.0.0.1:8080"
    public_url: str | None = None
    # /reports/{campaign} is served to whoever presents this token ...
    reports_token: SecretStr | None = None
    # ... or, only when set to "loopback", to clients whose TCP peer is this machine (a
    # reverse proxy on the same host makes every client look local: use the token then)
    reports_public: Literal["loopback"] | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @property
    def host(self) -> str:
        """Host part of ``listen``."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of ``listen``."""
        return int(self.listen.rpartition(":")[2])


def _check_account_type(account: Any) -> Any:
    if isinstance(account, Mapping) and account.get("type") not in ACCOUNT_TYPES:
        known = ", ".join(sorted(ACCOUNT_TYPES))
        raise ValueError(f"type must be one of {known}, got {account.get('type')!r}")
    return account


Account = Annotated[AnyAccount, BeforeValidator(_check_account_type)]


def _default_providers() -> dict[str, Account]:
    return default_accounts()


class EngineConfig(Strict):
    """The whole of engine.yaml, validated."""

    database_url: SecretStr | None = None
    data_dir: Path = Path(".engine")
    # the embedded PostgreSQL's settings over those sized for the machine (engine.pg_settings)
    postgres_settings: dict[str, str] = Field(default_factory=dict)
    default_region: str | None = None
    webhooks: WebhooksConfig = WebhooksConfig()
    providers: dict[str, Account] = Field(default_factory=_default_providers)
    # several accounts under one name a campaign's provider: may use (engine.routes)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    # when an account behind a route counts as failing (engine.health_rules)
    health: HealthConfig = HealthConfig()
    # With no pricing section every segment costs one credit; a section replaces this.
    pricing: PricingTable = PricingTable(default=Decimal(1))
    misfire_grace: Duration = timedelta(hours=1)
    max_attempts: int = Field(default=5, ge=1)
    shutdown_grace: Duration = timedelta(seconds=10)
    receipt_window: Duration = timedelta(hours=72)
    # how long a claimed message may stay 'sending' before another daemon settles it
    lease: Duration = timedelta(seconds=60)
    # whole-message replies that opt a number out, back in, or ask for help (logged)
    opt_out_keywords: tuple[str, ...] = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
    opt_in_keywords: tuple[str, ...] = ("START", "UNSTOP", "OPTIN")
    help_keywords: tuple[str, ...] = ("HELP", "INFO")

    def price_table(self, account: str | None = None) -> PriceTable:
        """Prices for ``account`` (its own table layered over the global one)."""
        own = self.providers[account].pricing if account is not None else None
        return PriceTable.layered(
            PriceTable(own.prefixes, own.default) if own is not None else None,
            PriceTable(self.pricing.prefixes, self.pricing.default),
        )

    def provider_names(self) -> set[str]:
        """What a campaign's ``provider:`` may name: an account or a route."""
        return set(self.providers) | set(self.routes)

    def accounts_of(self, provider: str) -> tuple[str, ...]:
        """The accounts a campaign's ``provider:`` sends through (one, or a route's)."""
        route = self.routes.get(provider)
        return route.accounts if route is not None else (provider,)

    def routed_accounts(self) -> set[str]:
        """Accounts some route names (their health counts failures: engine.health_rules)."""
        return {a for route in self.routes.values() for a in route.accounts}

    def router(self, name: str, rates: Mapping[str, float] | None = None) -> Router | None:
        """The chooser of route ``name`` (None: ``name`` is an account). ``rates``: each
        account's messages per second, default its configured rate."""
        route = self.routes.get(name)
        if route is None:
            return None
        return Router(
            name,
            route.strategy,
            route.accounts,
            {a: self.price_table(a) for a in route.accounts},
            {a: (rates or {}).get(a, self.providers[a].rate.per_second) for a in route.accounts},
        )

    @field_validator("postgres_settings", mode="before")
    @classmethod
    def _postgres_settings(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # the type check says what is wrong
        settings = {
            str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()
        }
        pg_settings.render(settings)  # a name PostgreSQL could not have is an error here
        return settings

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r} (use an ISO 3166 code such as ZA)")
        return value.upper()


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The config file to read: ``--config``, else ``$ENGINE_CONFIG``, else ``./engine.yaml``."""
    if explicit:
        return Path(explicit)
    if env.get("ENGINE_CONFIG"):
        return Path(env["ENGINE_CONFIG"])
    return DEFAULT_PATH


def load_config(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> EngineConfig:
    """Find, read and validate the configuration; raise ConfigError with file:line on error."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    if not path.exists():
        if explicit or env.get("ENGINE_CONFIG"):
            raise ConfigError(f"{path}: config file not found")
        return EngineConfig()
    return parse_config(path, path.read_text(encoding="utf-8"), env)


def parse_config(path: Path, text: str, env: Mapping[str, str]) -> EngineConfig:
    """Validate config text; every problem is reported as ``file:line:col: key: what``."""
    problems: list[str] = []

    def substitute(value: str, loc: yamldoc.Loc, pos: yamldoc.Position) -> str:
        new, missing = yamldoc.substitute_env(value, env)
        for name in missing:
            dotted = ".".join(map(str, loc))
            problems.append(
                f"{path}:{pos.line}:{pos.column}: {dotted}: environment variable {name} is not set"
            )
        return new

    try:
        doc = yamldoc.load(path, text, scalar_hook=substitute)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from exc
    if problems:
        raise ConfigError("\n".join(problems))
    if doc.data is None:
        return EngineConfig()
    if not isinstance(doc.data, Mapping):
        raise ConfigError(f"{path}:1:1: expected a mapping of settings")
    try:
        config = EngineConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError("\n".join(doc.validation_problems(exc))) from exc
    problems = secret_problems(doc) + [
        # a route's own name is pointed at as a key, a listed account as a value
        doc.problem(loc, message, key=len(loc) == 2)
        for loc, message in route_problems(config.routes, config.providers)
    ]
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def secret_problems(doc: yamldoc.Document) -> list[str]:
    """Secrets in a validated file that are empty or short, and simulator accounts without one.

    Read from the document, not the model, because ``webhook_secret: ${X}`` with an empty
    ``X`` validates as "no secret" there: here the key is present, so it is an error.
    """
    problems: list[str] = []
    webhooks = doc.data.get("webhooks")
    if isinstance(webhooks, Mapping) and "reports_token" in webhooks:
        problems += _short(doc, ("webhooks", "reports_token"), webhooks["reports_token"])
    for name, account in (doc.data.get("providers") or {}).items():
        loc = ("providers", name, "webhook_secret")
        if "webhook_secret" in account:
            problems += _short(doc, loc, account["webhook_secret"])
        elif _needs_secret(account.get("type")):
            problems.append(
                doc.problem(
                    loc,
                    f"a {account['type']} account needs a"
                    " webhook_secret (its webhook would take anyone's"
                    " receipts and opt-outs; `engine demo` needs no"
                    " config)",
                )
            )
    return problems


def _needs_secret(type_name: object) -> bool:
    """Whether accounts of this type serve webhooks only with a ``webhook_secret``."""
    model = ACCOUNT_TYPES.get(type_name) if isinstance(type_name, str) else None
    return model is not None and model.webhook_needs_secret


def _short(doc: yamldoc.Document, loc: yamldoc.Loc, value: Any) -> list[str]:
    if value is None or not str(value):
        return [doc.problem(loc, "is empty (an unset or empty ${VAR}?): a secret is required")]
    if len(str(value)) < MIN_SECRET:
        return [doc.problem(loc, f"is too short: use at least {MIN_SECRET} characters")]
    return []
