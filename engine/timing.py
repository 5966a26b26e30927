"""Time maths: quiet hours, cron on the local wall clock, send times and recipient zones.

Everything here is pure (no I/O): the campaign model (:mod:`engine.spec`) uses it to
validate and fire schedules, the expander and the dispatcher to time each message.

Choices (documented for users in the README):

- Cron day-of-week numbers follow standard cron (0 or 7 = Sunday, 1 = Monday); APScheduler 3
  counts from Monday, so the field is translated to day names before it reaches it. When both
  day-of-month and day-of-week are restricted, both must match (APScheduler), not either.
- Daylight saving: each local time fires at most once. A local time the clocks skip fires at
  the same offset before the change (02:30 becomes 03:30); in the hour that repeats, the first
  occurrence fires. Firing times are computed on the local wall clock, because APScheduler 3
  fires twice (and can go backwards) in a repeated hour.
- Quiet hours are read in the recipient's zone: the contact's, else the one zone of the
  number's numbering plan, else the campaign's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from engine.phones import number_zone

if TYPE_CHECKING:
    from engine.spec import Campaign


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


# --- quiet hours ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local-time window with no sends; ``start > end`` crosses midnight."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        """Whether the local wall-clock time ``t`` is inside the window."""
        t = t.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def end_after(self, local_dt: datetime) -> datetime:
        """When the window containing ``local_dt`` ends (``local_dt`` itself if outside it)."""
        if not self.contains(local_dt.time()):
            return local_dt
        day = local_dt.date()
        if local_dt.time() >= self.end:  # in the evening part of a window crossing midnight
            day += timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=local_dt.tzinfo)

    def release(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The first instant at or after ``instant`` (aware) that is not quiet in ``zone``."""
        local = instant.astimezone(zone)
        end = self.end_after(local)
        return instant if end is local else end.astimezone(UTC)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


_QUIET = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


def parse_quiet_hours(value: Any) -> QuietHours:
    """Parse ``"21:00-08:00"``; ``24:00`` is accepted as an end (midnight)."""
    if isinstance(value, QuietHours):
        return value
    match = _QUIET.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected quiet hours as 'HH:MM-HH:MM', got {value!r}")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if h2 == 24 and m2 == 0:
        h2 = 0
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"not a time of day in {value!r}")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"quiet hours {value!r} start and end at the same time")
    return QuietHours(time(h1, m1), time(h2, m2))


# --- cron ------------------------------------------------------------------------------

_CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # standard cron: 0 = Sunday


def cron_trigger(expr: str) -> CronTrigger:
    """A UTC trigger matching ``expr`` (standard five-field cron) on a wall clock."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {expr!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        fields[4] = _weekdays(fields[4])
        for name, label, text in zip(_CRON_FIELDS, _CRON_NAMES, fields, strict=True):
            _check_cron_field(name, label, text)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    return CronTrigger.from_crontab(" ".join(fields), timezone=UTC)


def _check_cron_field(name: str, label: str, text: str) -> None:
    try:
        CronTrigger(timezone=UTC, **{name: text})
    except ValueError as exc:
        message = re.sub(r"^Error validating expression '[^']*': | for field \"\w+\"", "", str(exc))
        raise ValueError(f"{label}: {message[:1].lower()}{message[1:]}") from None


def _weekdays(text: str) -> str:
    """Standard cron day-of-week (0-7, sun-sat, ranges, steps) as APScheduler day names."""
    days: set[int] = set()
    for term in text.split(","):
        days |= _weekday_term(term)
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days, key=lambda d: (d + 6) % 7))


def _weekday_term(term: str) -> set[int]:
    span, slash, step_text = term.partition("/")
    if slash and not (step_text.isdigit() and int(step_text) > 0):
        raise ValueError(f"day of week: bad step in {term!r}")
    if span == "*":
        low, high = 0, 6
    else:
        first, dash, last = span.partition("-")
        low = _weekday(first)
        high = _weekday(last) if dash else (6 if slash else low)
        if dash and high == 0 < low:  # "mon-sun": Sunday as the end of the week
            high = 7
        if high < low:
            raise ValueError(f"day of week: range {span!r} goes backwards")
    return {day % 7 for day in range(low, high + 1, int(step_text or 1))}


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text.lower() in _WEEKDAYS:
        return _WEEKDAYS.index(text.lower())
    raise ValueError(f"day of week: {text!r} is not 0-7 or sun-sat")


# --- the local wall clock --------------------------------------------------------------


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an aware UTC instant (fold 0: see the module docstring)."""
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _recent_gap(after: datetime, zone: ZoneInfo) -> timedelta:
    """How far the clocks jumped forward in the few hours before ``after`` (usually 0)."""
    now = after.astimezone(zone).utcoffset() or timedelta(0)
    before = (after - timedelta(hours=3)).astimezone(zone).utcoffset() or timedelta(0)
    return max(now - before, timedelta(0))


def next_cron_fire(
    trigger: CronTrigger, zone: ZoneInfo, until: date | None, after: datetime
) -> datetime | None:
    """The first firing of ``trigger``, read on ``zone``'s wall clock, strictly after ``after``.

    None when there is none, or none on or before the local day ``until``.
    """
    # a wall time the clocks skipped maps past the jump, so look back by the jump
    wall = after.astimezone(zone).replace(tzinfo=None) - _recent_gap(after, zone)
    while True:
        fire = trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC) + _TICK)
        if fire is None:
            return None
        wall = fire.replace(tzinfo=None)
        if until is not None and wall.date() > until:
            return None
        instant = wall_to_instant(wall, zone)
        if instant > after:
            return instant


_TICK = timedelta(microseconds=1)


# --- send times per recipient ---------------------------------------------------------


@dataclass(slots=True)
class SendTiming:
    """Send and expiry times per recipient time zone, computed once per batch."""

    campaign: Campaign
    send_at: datetime
    cache: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)

    def times(self, zone_name: str) -> tuple[datetime, datetime]:
        """(next_attempt_at, expires_at) for a recipient in ``zone_name``."""
        found = self.cache.get(zone_name)
        if found is None:
            found = self.cache[zone_name] = self._compute(zone_name)
        return found

    def _compute(self, zone_name: str) -> tuple[datetime, datetime]:
        schedule = self.campaign.schedule
        start = self.send_at
        if schedule.quiet_hours is not None:
            start = schedule.quiet_hours.release(start, _zone(zone_name))
        return start, start + schedule.validity


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def recipient_zone(contact_zone: str | None, phone: str, campaign_zone: str) -> str:
    """Where quiet hours are read: the contact's zone, else the number's, else the campaign's."""
    return contact_zone or number_zone(phone) or campaign_zone
