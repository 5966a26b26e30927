"""The simulator's settings: how each provider family behaves (faults, rejections, receipts).

A YAML file of these (``engine simulator --settings``) or a :class:`SimulatorSettings` built
in code (tests, the demo, the benchmarks) drives every fault the simulator injects.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from engine.providers.base import Strict


def _range(value: Any) -> Any:
    """A number means a fixed value; ``[low, high]`` a uniform range."""
    if isinstance(value, int | float):
        return (value, value)
    return value


Seconds = Annotated[tuple[float, float], BeforeValidator(_range)]


class FamilySettings(Strict):
    """How one provider family behaves: faults, rejections and receipts."""

    webhook_url: str | None = None  # where receipts go; None: no receipts
    webhook_secret: str | None = None
    require_token: str | None = None  # None: any credentials of the right shape
    latency: Seconds = (0.0, 0.0)
    rate_limited: float = Field(default=0.0, ge=0, le=1)  # fraction of requests → 429
    retry_after: float = Field(default=1.0, ge=0)
    server_errors: float = Field(default=0.0, ge=0, le=1)  # fraction → 500, nothing taken
    timeouts: float = Field(default=0.0, ge=0, le=1)  # fraction taken, then answered late
    hang: float = Field(default=30.0, ge=0)  # how late (beyond any client timeout)
    reject_suffixes: tuple[str, ...] = ("0000",)  # numbers always rejected
    delivered: float = Field(default=0.9, ge=0, le=1)
    undelivered: float = Field(default=0.05, ge=0, le=1)  # at most 1 - delivered; rest fail
    sent_receipts: bool = True  # report "sent" before the final status
    receipt_delay: Seconds = (0.0, 0.0)  # from sent to the final status
    duplicates: float = Field(default=0.0, ge=0, le=1)  # final receipt posted twice
    out_of_order: float = Field(default=0.0, ge=0, le=1)  # final status before "sent"
    early_receipts: float = Field(default=0.0, ge=0, le=1)  # receipt before the response
    clicks: float = Field(default=0.0, ge=0, le=1)  # delivered messages whose link is clicked
    click_rates: dict[str, float] = Field(default_factory=dict)  # body text -> clicks share

    @model_validator(mode="after")
    def _ranges(self) -> FamilySettings:
        for name in ("latency", "receipt_delay"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a number or [low, high] with 0 <= low <= high")
        return self


class SimulatorSettings(Strict):
    """The whole simulator: a default behaviour, overridden per provider family."""

    seed: int = 0
    default: FamilySettings = FamilySettings()
    families: dict[str, FamilySettings] = Field(default_factory=dict)
    max_pending_receipts: int = Field(default=100_000, ge=1)  # beyond this, sends wait
    post_workers: int = Field(default=8, ge=1)  # concurrent receipt POSTs per family
    post_attempts: int = Field(default=3, ge=1)
    post_timeout: float = Field(default=5.0, gt=0)
    credit_balance: Decimal = Decimal("1000000")

    def family(self, name: str) -> FamilySettings:
        """The settings for one provider family."""
        return self.families.get(name, self.default)
