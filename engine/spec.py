"""Campaign files: the model of one campaign, and the loader that reports every problem.

:func:`load_campaign` reads one YAML file and either returns a :class:`Campaign` or raises
:class:`~engine.errors.CampaignFileError` listing every problem of the file, in file order,
each as ``path:line:col: field.path: what is wrong`` (the column is the value's).

Choices the brief left open (documented for users in the README):

- ``schedule``: exactly one of ``at``, ``cron`` or ``now: true``; ``until`` is only allowed
  with ``cron`` (a one-off campaign has nothing to stop). ``at`` and ``until`` are local to
  ``timezone`` and carry no UTC offset.
- Cron day-of-week numbers follow standard cron (0 or 7 = Sunday, 1 = Monday); APScheduler 3
  counts from Monday, so the field is translated to day names before it reaches it. When both
  day-of-month and day-of-week are restricted, both must match (APScheduler), not either.
- Daylight saving: each local time fires at most once. A local time the clocks skip fires at
  the same offset before the change (02:30 becomes 03:30); in the hour that repeats, the first
  occurrence fires. Firing times are computed on the local wall clock, because APScheduler 3
  fires twice (and can go backwards) in a repeated hour.
- A campaign file may be at most 1 MiB (:data:`MAX_FILE_BYTES`); YAML aliases and nesting
  are limited as :mod:`engine.yamldoc` describes.
- A phone number written without quotes (``+27821234567``) is read by YAML as a number and the
  ``+`` is lost, so it is an error asking for quotes rather than a guess.
- ``limits.rate`` above the account's rate is not an error: the lower of the two applies.
- Files are read and the audience file's existence is checked; nothing else touches the disk,
  the database or the network.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine import audiencefile, phones, templates, yamldoc
from engine.errors import CampaignFileError
from engine.providers.base import Strict
from engine.sms import Mode
from engine.values import Duration, Rate, format_duration, parse_period_cap, parse_rate

Loc = tuple[str | int, ...]


# --- what a validation may look at besides the data ------------------------------------


@dataclass(frozen=True, slots=True)
class _Checks:
    """The loader's validation context; without it (``from_spec``) nothing outside is checked."""

    base_dir: Path | None = None  # the campaign file's folder; None: skip filesystem checks
    accounts: frozenset[str] | None = None
    default_region: str | None = None
    positioned: bool = False  # the loader reports cross-field problems itself, with positions


def _checks(info: ValidationInfo) -> _Checks:
    return info.context if isinstance(info.context, _Checks) else _Checks()


# --- small values ----------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``count`` messages per recipient in any ``period``, across campaigns."""

    count: int
    period: timedelta

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.period)}"


def _frequency_cap(value: Any) -> FrequencyCap:
    if isinstance(value, FrequencyCap):
        return value
    count, period = parse_period_cap(value)
    if period <= timedelta(0):
        raise ValueError(f"the period of a frequency cap must be positive: {value!r}")
    return FrequencyCap(count, period)


def _rate_text(rate: Rate) -> str:
    """``10/s``: a form :func:`parse_rate` reads back (``str(Rate)`` gives ``10/1s``)."""
    units = {1: "s", 60: "min", 3600: "h"}
    unit = units.get(int(rate.period.total_seconds()))
    return f"{rate.count:g}/{unit}" if unit else f"{rate.per_second:g}/s"


def _local_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("give a local time without a UTC offset; the zone is 'timezone'")
        return value
    text = value if isinstance(value, str) else ""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?", text.strip()):
        try:
            return datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"not a real date and time: {value!r}") from None
    raise ValueError(f"expected a local time 'YYYY-MM-DD HH:MM', got {value!r}")


def _format_local(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")


def _local_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a real date: {value!r}") from None
    raise ValueError(f"expected a date 'YYYY-MM-DD', got {value!r}")


def _zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


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


def _cron_expr(value: str) -> str:
    expr = " ".join(value.split())
    trigger = cron_trigger(expr)
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"cron expression {expr!r} never fires")
    return expr


def _wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an aware UTC instant (fold 0: see the module docstring)."""
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _recent_gap(after: datetime, zone: ZoneInfo) -> timedelta:
    """How far the clocks jumped forward in the few hours before ``after`` (usually 0)."""
    now = after.astimezone(zone).utcoffset() or timedelta(0)
    before = (after - timedelta(hours=3)).astimezone(zone).utcoffset() or timedelta(0)
    return max(now - before, timedelta(0))


# --- phone numbers, names, templates ---------------------------------------------------


def _quoted(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'write phone numbers in quotes, e.g. "+{value}": YAML read {value} as a number'
        )
    return value


def _e164(value: str, info: ValidationInfo) -> str:
    return phones.parse_e164(value, _checks(info).default_region)


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _campaign_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a campaign name: use lowercase letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    return value


def _provider(value: str, info: ValidationInfo) -> str:
    accounts = _checks(info).accounts
    if accounts is not None and value not in accounts:
        known = ", ".join(sorted(accounts)) or "none"
        raise ValueError(f"unknown provider account {value!r} (engine.yaml has: {known})")
    return value


def _template(value: str) -> str:
    if not value.strip():
        raise ValueError("the message is empty")
    problem = templates.check_syntax(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _locale_tag(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError(f"{value!r} is not a locale (use e.g. es, pt-BR)")
    return value


def _var_name(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} cannot be used in a template: use letters, digits and '_'")
    return value


def _plain(value: Any) -> Any:
    """YAML dates and times as ISO text, so that vars survive a JSON round trip unchanged."""
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _non_negative(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError(f"budget must be a number of credits, zero or more, got {value}")
    return value


def _audience_file(value: Path | None, info: ValidationInfo) -> Path | None:
    base = _checks(info).base_dir
    if value is None or base is None:
        return value
    return audiencefile.resolve_inside(base, value)  # the rule is in its docstring


LocalDateTime = Annotated[
    datetime, BeforeValidator(_local_datetime), PlainSerializer(_format_local, return_type=str)
]
LocalDate = Annotated[date, BeforeValidator(_local_date)]
ZoneName = Annotated[str, AfterValidator(_zone_name)]
CronExpr = Annotated[str, AfterValidator(_cron_expr)]
QuietHoursValue = Annotated[
    QuietHours, BeforeValidator(parse_quiet_hours), PlainSerializer(str, return_type=str)
]
FrequencyCapValue = Annotated[
    FrequencyCap, BeforeValidator(_frequency_cap), PlainSerializer(str, return_type=str)
]
CampaignRate = Annotated[
    Rate, BeforeValidator(parse_rate), PlainSerializer(_rate_text, return_type=str)
]
Phone = Annotated[str, BeforeValidator(_quoted), AfterValidator(_e164)]
GroupName = Annotated[str, Field(min_length=1)]
TemplateSource = Annotated[str, AfterValidator(_template)]
LocaleTag = Annotated[str, AfterValidator(_locale_tag)]
VarName = Annotated[str, AfterValidator(_var_name)]
Budget = Annotated[Decimal, AfterValidator(_non_negative)]


class Channel(StrEnum):
    """Where a message goes; every channel goes through the account's adapter."""

    SMS = "sms"
    WHATSAPP = "whatsapp"
    FACEBOOK = "facebook"
    CHAT = "chat"


# --- cross-field checks, shared by the loader (with positions) and the models ----------


def _schedule_problems(schedule: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    kinds = [kind for kind in ("at", "cron", "now") if schedule.get(kind) not in (None, False)]
    problems: list[tuple[Loc, str]] = []
    if len(kinds) != 1:
        found = f" (found {' and '.join(kinds)})" if kinds else ""
        problems.append(((), f"give exactly one of at, cron or now: true{found}"))
    if schedule.get("until") is not None and kinds and "cron" not in kinds:
        problems.append((("until",), "until applies only to a cron schedule"))
    return problems


def _audience_problems(audience: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    if any(audience.get(source) for source in ("groups", "contacts", "file")):
        return []
    return [((), "no recipients: give at least one of groups, contacts or file")]


_CROSS_CHECKS = {"schedule": _schedule_problems, "audience": _audience_problems}


def _raise_cross(problems: list[tuple[Loc, str]], info: ValidationInfo) -> None:
    if problems and not _checks(info).positioned:
        raise ValueError("; ".join(message for _, message in problems))


# --- the models ------------------------------------------------------------------------


class Schedule(Strict):
    """When a campaign fires, in which zone, and when its messages may go out."""

    at: LocalDateTime | None = None
    cron: CronExpr | None = None
    now: bool = False
    timezone: ZoneName = "UTC"
    until: LocalDate | None = None
    quiet_hours: QuietHoursValue | None = None
    validity: Annotated[Duration, AfterValidator(_positive)] = timedelta(hours=24)

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> Schedule:
        _raise_cross(_schedule_problems(dict(self)), info)
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def kind(self) -> Literal["at", "cron", "now"]:
        """Which of ``at``, ``cron`` or ``now`` this schedule is."""
        return "at" if self.at is not None else "cron" if self.cron is not None else "now"

    @property
    def at_utc(self) -> datetime | None:
        """The instant of a one-off ``at`` schedule (aware, UTC)."""
        return None if self.at is None else _wall_to_instant(self.at, self.zone)

    def next_fire_time(self, after: datetime) -> datetime | None:
        """The first firing strictly after ``after`` (aware), in UTC; None if there is none.

        ``now`` campaigns fire when applied, so they have no firing times here.
        """
        if after.tzinfo is None:
            raise ValueError("after must be an aware datetime")
        if self.cron is not None:
            return self._next_cron(after)
        at = self.at_utc
        return at if at is not None and at > after else None

    def fire_times(self, after: datetime, before: datetime) -> Iterator[datetime]:
        """Every firing in ``(after, before]``, in order (for catching up and previews)."""
        fire = self.next_fire_time(after)
        while fire is not None and fire <= before:
            yield fire
            fire = self.next_fire_time(fire)

    def _next_cron(self, after: datetime) -> datetime | None:
        assert self.cron is not None
        zone, trigger = self.zone, cron_trigger(self.cron)
        # a wall time the clocks skipped maps past the jump, so look back by the jump
        wall = after.astimezone(zone).replace(tzinfo=None) - _recent_gap(after, zone)
        while True:
            fire = trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC) + _TICK)
            if fire is None:
                return None
            wall = fire.replace(tzinfo=None)
            if self.until is not None and wall.date() > self.until:
                return None
            instant = _wall_to_instant(wall, zone)
            if instant > after:
                return instant


_TICK = timedelta(microseconds=1)


class Audience(Strict):
    """Who receives the campaign: groups and contacts, minus excluded groups."""

    groups: Annotated[list[GroupName], BeforeValidator(_as_list)] = Field(default_factory=list)
    exclude_groups: Annotated[list[GroupName], BeforeValidator(_as_list)] = Field(
        default_factory=list
    )
    contacts: list[Phone] = Field(default_factory=list)
    file: Annotated[Path | None, AfterValidator(_audience_file)] = None

    @model_validator(mode="after")
    def _not_empty(self, info: ValidationInfo) -> Audience:
        _raise_cross(_audience_problems(dict(self)), info)
        return self


class MessageSpec(Strict):
    """The message: a body template, per-locale templates, encoding and length limit."""

    body: TemplateSource
    locales: dict[LocaleTag, TemplateSource] = Field(default_factory=dict)
    encoding: Mode = Mode.AUTO  # detected, forced, or transliterated to GSM-7 (smart)
    max_segments: int | None = Field(default=None, ge=1, le=255)

    @field_validator("locales")
    @classmethod
    def _distinct(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for tag in value:
            other = seen.setdefault(templates.normalise_locale(tag), tag)
            if other != tag:
                raise ValueError(f"locales {other!r} and {tag!r} are the same locale")
        return value


class Limits(Strict):
    """Optional per-campaign limits: send rate, budget, per-recipient frequency."""

    rate: CampaignRate | None = None
    budget: Budget | None = None
    frequency_cap: FrequencyCapValue | None = None


class Campaign(Strict):
    """One campaign file, validated."""

    name: Annotated[str, AfterValidator(_campaign_name)]
    description: str | None = None
    provider: Annotated[str, AfterValidator(_provider)]
    sender: Annotated[str, BeforeValidator(_quoted), Field(min_length=1)] | None = None
    channel: Channel = Channel.SMS
    schedule: Schedule
    audience: Audience
    message: MessageSpec
    vars: Annotated[dict[VarName, JsonValue], BeforeValidator(_plain)] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)

    def spec_json(self) -> dict[str, Any]:
        """The campaign as JSON-able data (for the ``campaigns.spec`` jsonb column)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_spec(cls, data: Mapping[str, Any]) -> Campaign:
        """Re-validate a stored spec, without looking at files or accounts."""
        return cls.model_validate(data)

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON spec: equal specs, equal hashes."""
        text = json.dumps(self.spec_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# --- loading ---------------------------------------------------------------------------


def load_campaign(
    path: Path,
    *,
    accounts: Collection[str] | None = None,
    default_region: str | None = None,
) -> Campaign:
    """Read and validate one campaign file; raise CampaignFileError listing every problem."""
    return _load(path, _context(path, accounts, default_region))[1]


def load_paths(
    paths: Iterable[Path],
    *,
    accounts: Collection[str] | None = None,
    default_region: str | None = None,
) -> tuple[list[tuple[Path, Campaign]], list[str]]:
    """Load files and folders (their ``*.yaml``/``*.yml``): the good campaigns, all problems."""
    problems: list[str] = []
    loaded: list[tuple[Path, Campaign]] = []
    first: dict[str, Path] = {}
    for path in _campaign_files(paths, problems):
        try:
            doc, campaign = _load(path, _context(path, accounts, default_region))
        except CampaignFileError as exc:
            problems.extend(exc.problems)
            continue
        if campaign.name in first:
            message = f"campaign {campaign.name!r} is already defined in {first[campaign.name]}"
            problems.append(doc.problem(("name",), message))
            continue
        first[campaign.name] = path
        loaded.append((path, campaign))
    return loaded, problems


def _context(path: Path, accounts: Collection[str] | None, region: str | None) -> _Checks:
    names = None if accounts is None else frozenset(accounts)
    return _Checks(path.parent.resolve(), names, region and region.upper(), positioned=True)


def _campaign_files(paths: Iterable[Path], problems: list[str]) -> list[Path]:
    files: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(
                child
                for child in path.iterdir()
                if child.suffix in (".yaml", ".yml")
                and not child.name.startswith(".")
                and child.is_file()
            )
            if not found:
                problems.append(f"{path}: no campaign files (*.yaml) in this folder")
            files.update((child.resolve(), child) for child in found)
        elif path.exists():
            files.setdefault(path.resolve(), path)
        else:
            problems.append(f"{path}: no such file or folder")
    return list(files.values())


def _load(path: Path, checks: _Checks) -> tuple[yamldoc.Document, Campaign]:
    doc = _read(path)
    problems = _cross_problems(doc)
    try:
        campaign = Campaign.model_validate(doc.data, context=checks)
    except ValidationError as exc:
        problems = doc.validation_problems(exc) + problems
    if problems:
        raise CampaignFileError(_in_file_order(path, problems))
    return doc, campaign


#: the largest campaign file read (a campaign is a page of YAML; the audience goes in a CSV)
MAX_FILE_BYTES = 1024 * 1024


def _read(path: Path) -> yamldoc.Document:
    try:
        doc = yamldoc.load(path, _read_text(path))
    except yaml.YAMLError as exc:
        raise CampaignFileError([yamldoc.yaml_error(path, exc)]) from exc
    except UnicodeDecodeError as exc:
        raise CampaignFileError([f"{path}: not a UTF-8 text file"]) from exc
    except OSError as exc:
        raise CampaignFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    if not isinstance(doc.data, Mapping):
        what = "a mapping with name, provider, schedule, audience and message"
        raise CampaignFileError([doc.problem((), f"expected a campaign: {what}")])
    return doc


def _read_text(path: Path) -> str:
    """The file's text, reading no more than the cap (``/dev/zero`` is endless)."""
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CampaignFileError(
            [f"{path}: the file is larger than 1 MiB, the limit for a campaign file"])
    return data.decode("utf-8")


def _cross_problems(doc: yamldoc.Document) -> list[str]:
    problems: list[str] = []
    for key, check in _CROSS_CHECKS.items():
        section = doc.data.get(key)
        if isinstance(section, Mapping):
            problems += [doc.problem((key, *loc), message) for loc, message in check(section)]
    return problems


def _in_file_order(path: Path, problems: list[str]) -> list[str]:
    prefix = len(f"{path}:")

    def position(problem: str) -> tuple[int, int]:
        found = re.match(r"(\d+):(\d+):", problem[prefix:])
        return (int(found[1]), int(found[2])) if found else (0, 0)

    return sorted(dict.fromkeys(problems), key=position)
