"""What a message costs: a rate per segment chosen by the destination's E.164 prefix.

The longest matching prefix wins, then the table's default. A provider account may carry
its own table layered over the global one; the lookup order is then

    1. the account's prefixes (longest first)
    2. the global prefixes (longest first)
    3. the account's default
    4. the global default

so a rate the account names for a destination always wins, a specific global rate beats a
catch-all account default, and only a destination nobody prices falls to a default.
Rates are ``Decimal``, so costs add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from engine.errors import PricingError

# How much of an unpriced number an error shows: enough to name the country and network,
# not the subscriber (numbers are personal data and errors end up in logs).
_SHOWN_DIGITS = 5


class NoRateError(PricingError, ValueError):
    """No prefix matches the destination and there is no default rate."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        super().__init__(f"no rate for numbers starting +{prefix} and no default rate")


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Rates per segment by E.164 prefix (digits, '+' optional), with an optional default."""

    prefixes: Mapping[str, Decimal] = field(default_factory=dict, hash=False)
    default: Decimal | None = None
    fallback: PriceTable | None = None
    # Distinct prefix lengths, longest first: a lookup tries one dict get per length.
    _lengths: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixes = _normalize(self.prefixes)
        if self.default is not None:
            _check_rate("default", self.default)
        object.__setattr__(self, "prefixes", MappingProxyType(prefixes))
        object.__setattr__(
            self, "_lengths", tuple(sorted({len(p) for p in prefixes}, reverse=True))
        )

    @classmethod
    def layered(cls, account: PriceTable | None, global_: PriceTable) -> PriceTable:
        """Return ``account``'s table falling back to ``global_`` in the documented order."""
        if account is None:
            return global_
        below = global_ if account.fallback is None else cls.layered(account.fallback, global_)
        return cls(account.prefixes, account.default, below)

    def rate_for(self, e164: str) -> Decimal:
        """Return the rate per segment for ``e164`` ('+27821234567' or '27821234567')."""
        digits = e164[1:] if e164.startswith("+") else e164
        rate = self._match(digits)
        if rate is None:
            rate = self._default()
        if rate is None:
            raise NoRateError(digits[:_SHOWN_DIGITS])
        return rate

    def cost(self, segments: int, e164: str) -> Decimal:
        """Return what ``segments`` segments to ``e164`` cost."""
        if segments < 0:
            raise ValueError(f"segments must not be negative, got {segments}")
        return segments * self.rate_for(e164)

    @property
    def longest_prefix(self) -> int:
        """The most digits any prefix here or in a fallback has: numbers that agree on
        that many digits have the same rate (so rates may be cached by them)."""
        below = 0 if self.fallback is None else self.fallback.longest_prefix
        return max((*self._lengths[:1], below))

    def _match(self, digits: str) -> Decimal | None:
        """Return the longest-prefix rate in this table or its fallbacks, if any."""
        get = self.prefixes.get
        for length in self._lengths:
            # A number shorter than ``length`` slices to itself: still a correct match.
            rate = get(digits[:length])
            if rate is not None:
                return rate
        return None if self.fallback is None else self.fallback._match(digits)

    def _default(self) -> Decimal | None:
        """Return this table's default, else the first default among its fallbacks."""
        if self.default is not None or self.fallback is None:
            return self.default
        return self.fallback._default()


def _normalize(prefixes: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Strip a leading '+' from each prefix and check prefixes and rates."""
    out: dict[str, Decimal] = {}
    for raw, rate in prefixes.items():
        prefix = raw.removeprefix("+")
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(f"price prefix must be digits, got {raw!r}")
        if prefix in out and out[prefix] != rate:
            raise ValueError(f"price prefix {prefix!r} is given twice with different rates")
        _check_rate(f"prefix {raw!r}", rate)
        out[prefix] = rate
    return out


def _check_rate(what: str, rate: Decimal) -> None:
    """Refuse a rate that is not a finite, non-negative Decimal (floats would drift)."""
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate < 0:
        raise ValueError(f"rate for {what} must be a non-negative Decimal, got {rate!r}")
