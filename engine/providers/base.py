"""What every provider account and adapter shares.

An account is one block under ``providers:`` in engine.yaml. Its ``type`` picks the
adapter; the keys every type accepts live on :class:`AccountBase`, and each provider
module adds its own (credentials, ids) on a subclass with ``type: Literal[...]``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from engine.values import Duration, Rate, RateValue


class Strict(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PricingTable(Strict):
    """Credits per segment: ``prefixes`` maps E.164 prefixes (``"27"``, ``"2782"``) to a rate."""

    default: Decimal | None = None
    prefixes: dict[str, Decimal] = Field(default_factory=dict)


class AccountBase(Strict):
    """Keys common to every provider account."""

    #: the provider's production API, used when ``base_url`` is not set
    default_base_url: ClassVar[str] = ""

    type: str
    base_url: str | None = None
    rate: RateValue = Rate(10, timedelta(seconds=1))
    concurrency: int = Field(default=8, ge=1, le=1000)
    timeout: Duration = timedelta(seconds=10)
    webhook_secret: SecretStr | None = None
    sender: str | None = None
    pricing: PricingTable | None = None

    @property
    def url(self) -> str:
        """The API base URL in use, without a trailing slash."""
        return (self.base_url or self.default_base_url).rstrip("/")
