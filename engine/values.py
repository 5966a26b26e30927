"""Small value types written by people in YAML: durations (``6h``) and rates (``10/s``).

Both parse into frozen values and are usable as pydantic field types, so the
config and the campaign files share one syntax and one error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}


def parse_duration(value: Any) -> timedelta:
    """Parse ``90``, ``10s``, ``5m``, ``6h``, ``1d`` or ``1h30m`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return _non_negative(timedelta(seconds=value), value)
    text = str(value).strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 6h, 1d)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return _non_negative(timedelta(seconds=seconds), value)


def _non_negative(delta: timedelta, raw: Any) -> timedelta:
    if delta < timedelta(0):
        raise ValueError(f"duration must not be negative: {raw!r}")
    return delta


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way people write it (``90s``, ``6h``)."""
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` events per ``period``."""

    count: float
    period: timedelta

    @property
    def per_second(self) -> float:
        """The rate in events per second."""
        return self.count / self.period.total_seconds()

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}.get(int(self.period.total_seconds()))
        if unit is None:  # not a period people write; say it per second
            return f"{self.per_second:g}/s"
        return f"{self.count:g}/{unit}"


def parse_rate(value: Any) -> Rate:
    """Parse ``10/s``, ``600/min``, ``1000/h`` or a bare number (per second)."""
    if isinstance(value, Rate):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"rate must be positive: {value!r}")
        return Rate(float(value), timedelta(seconds=1))
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a rate: {value!r} (use N/s, N/min or N/h)")
    return Rate(float(match.group(1)), timedelta(seconds=_RATE_UNIT_SECONDS[match.group(2)]))


def parse_period_cap(value: Any) -> tuple[int, timedelta]:
    """Parse a frequency cap such as ``1/24h`` into (count, period)."""
    text = str(value).strip()
    count, sep, period = text.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"not a frequency cap: {value!r} (use e.g. 1/24h)")
    return int(count), parse_duration(period)


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
RateValue = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(str, return_type=str)]
