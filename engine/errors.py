"""The engine's exceptions: one root, a few meaningful branches.

    EngineError
    ├── ConfigError           engine.yaml or the environment is wrong
    ├── CampaignFileError     a campaign file is wrong (carries every problem found)
    ├── DatabaseError         PostgreSQL is unreachable, or a migration is refused
    │   └── MigrationError
    ├── PricingError          no rate for a destination
    └── ProviderError         a provider call failed
        ├── ProviderTemporaryError   provably not accepted; safe to retry
        └── ProviderPermanentError   rejected; never retry

Lower-level errors (asyncpg, aiohttp, yaml) are mapped at the boundary with
``raise ... from exc`` so the CLI can print one clear line.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = 1


class ConfigError(EngineError):
    """The configuration file or environment is invalid."""


class CampaignFileError(EngineError):
    """A campaign file is invalid; ``problems`` holds every ``path:line:col: field: what``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DatabaseError(EngineError):
    """PostgreSQL is unreachable or refused an operation."""


class MigrationError(DatabaseError):
    """A migration cannot be applied (for example an applied file was edited)."""


class PricingError(EngineError):
    """No price is known for a destination."""


class ProviderError(EngineError):
    """A provider call failed."""


class ProviderTemporaryError(ProviderError):
    """The provider provably did not accept the request; it may be retried."""


class ProviderPermanentError(ProviderError):
    """The provider rejected the request; it must not be retried."""
