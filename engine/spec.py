"""The campaign model: one campaign file, validated (pydantic), with no I/O of its own.

:mod:`engine.campaign_loader` reads the files and reports every problem with its position;
:meth:`Campaign.from_spec` re-validates a stored spec. The time maths (quiet hours, cron on
the local wall clock) is in :mod:`engine.timing`.

Choices the brief left open (documented for users in the README):

- ``schedule``: exactly one of ``at``, ``cron`` or ``now: true``; ``until`` is only allowed
  with ``cron`` (a one-off campaign has nothing to stop). ``at`` and ``until`` are local to
  ``timezone`` and carry no UTC offset.
- A phone number written without quotes (``+27821234567``) is read by YAML as a number and the
  ``+`` is lost, so it is an error asking for quotes rather than a guess.
- ``limits.rate`` above the account's rate is not an error: the lower of the two applies.
- With the loader's :class:`Checks` (and only then) the provider account must exist in the
  configuration and the audience file inside the campaign's folder; nothing else here touches
  the disk, the database or the network.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine import audiencefile, phones
from engine.sms import Mode
from engine.spec_message import (
    LinkSpec,
    LocaleTag,
    TemplateSource,
    Variant,
    Winner,
    distinct_locales,
    message_problems,
)
from engine.strict import Strict
from engine.timing import (
    QuietHours,
    cron_trigger,
    next_cron_fire,
    parse_quiet_hours,
    wall_to_instant,
)
from engine.values import Duration, Rate, format_duration, parse_period_cap, parse_rate

Loc = tuple[str | int, ...]


# --- what a validation may look at besides the data ------------------------------------


@dataclass(frozen=True, slots=True)
class Checks:
    """The loader's validation context; without it (``from_spec``) nothing outside is checked."""

    base_dir: Path | None = None  # the campaign file's folder; None: skip filesystem checks
    accounts: frozenset[str] | None = None
    default_region: str | None = None
    positioned: bool = False  # the loader reports cross-field problems itself, with positions


def _checks(info: ValidationInfo) -> Checks:
    return info.context if isinstance(info.context, Checks) else Checks()


# --- small values ----------------------------------------------------------------------


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


def _cron_expr(value: str) -> str:
    expr = " ".join(value.split())
    trigger = cron_trigger(expr)
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"cron expression {expr!r} never fires")
    return expr


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


CROSS_CHECKS = {
    "schedule": _schedule_problems,
    "audience": _audience_problems,
    "message": message_problems,
}


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
        return None if self.at is None else wall_to_instant(self.at, self.zone)

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
        return next_cron_fire(cron_trigger(self.cron), self.zone, self.until, after)


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
    """The message: a body template (or A/B variants), per-locale templates, encoding and
    length limit; see :mod:`engine.spec_message` for variants and winner."""

    body: TemplateSource | None  # required (None only with variants: _variants_no_body)
    locales: dict[LocaleTag, TemplateSource] = Field(default_factory=dict)
    encoding: Mode = Mode.AUTO  # detected, forced, or transliterated to GSM-7 (smart)
    max_segments: int | None = Field(default=None, ge=1, le=255)
    variants: list[Variant] = Field(default_factory=list)
    winner: Winner | None = None

    @field_validator("locales")
    @classmethod
    def _distinct(cls, value: dict[str, str]) -> dict[str, str]:
        return distinct_locales(value)

    @model_validator(mode="before")
    @classmethod
    def _variants_no_body(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("variants") and "body" not in data:
            return {**data, "body": None}
        return data

    @model_validator(mode="after")
    def _body_or_variants(self, info: ValidationInfo) -> MessageSpec:
        _raise_cross(message_problems(self.model_dump()), info)
        return self


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
    links: LinkSpec = Field(default_factory=LinkSpec)

    @model_validator(mode="after")
    def _clicks_tracked(self) -> Campaign:
        winner = self.message.winner
        if winner is not None and winner.by == "clicks" and not self.links.track:
            raise ValueError("message.winner.by: clicks needs links.track: true")
        return self

    def spec_json(self) -> dict[str, Any]:
        """The campaign as JSON-able data (for the ``campaigns.spec`` jsonb column).

        The keys of tracked links and variants are left out while unused, so a campaign
        applied before they existed keeps its hash (and ``apply`` stays idempotent)."""
        data = self.model_dump(mode="json")
        if not self.links.track and self.links == LinkSpec():
            del data["links"]
        if not self.message.variants and self.message.winner is None:
            del data["message"]["variants"], data["message"]["winner"]
        return data

    @classmethod
    def from_spec(cls, data: Mapping[str, Any]) -> Campaign:
        """Re-validate a stored spec, without looking at files or accounts."""
        return cls.model_validate(data)

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON spec: equal specs, equal hashes."""
        text = json.dumps(self.spec_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
