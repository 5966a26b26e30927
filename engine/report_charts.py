"""The data of a run's chart page, and how it is computed from the report views' rows.

Pure: :mod:`engine.reports` reads the rows (``report_html``), this module shapes them
into a :class:`PageData` (the funnel, the timeline buckets, the latency histogram, the
headline figures), and :mod:`engine.report_page` draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.report_output import cell
from engine.status import SKIP_STATUSES, MessageStatus

#: lower edges (seconds) of the time-to-delivery bins after the first ("< 1s")
LATENCY_EDGES = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LATENCY_LABELS = (
    "<1s",
    "1–2s",
    "2–5s",
    "5–10s",
    "10–30s",
    "30s–1m",
    "1–2m",
    "2–5m",
    "5–10m",
    "10–30m",
    "30m–1h",
    "1–2h",
    "2–6h",
    "6–24h",
    "≥1d",
)
#: timeline bucket sizes in seconds; the smallest that gives at most TIMELINE_BUCKETS, so a
#: one-minute run is drawn per second and a three-day one per half hour
TIMELINE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600,
                  43200, 86400, 172800, 604800)  # fmt: skip
TIMELINE_BUCKETS = 180
#: channels whose providers send no read receipts: their funnel ends at "delivered"
NO_READ_RECEIPTS = frozenset({"sms"})

_STATUS_ORDER = [s.value for s in MessageStatus]
_SKIPS = frozenset(s.value for s in SKIP_STATUSES) - {MessageStatus.DUPLICATE.value}

# --- the data a page shows --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the funnel, and what was lost on the way to it (reason, messages)."""

    label: str
    messages: int
    losses: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Series:
    """Messages per time bucket for one kind of event (sent, delivered, read, failed)."""

    name: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    """Event counts in equal buckets from ``start``."""

    start: datetime
    bucket: timedelta
    series: tuple[Series, ...]


@dataclass(frozen=True, slots=True)
class Reason:
    """One bar of the failures chart."""

    status: str
    code: str | None
    account: str
    messages: int
    skipped: bool
    detail: str | None

    @property
    def label(self) -> str:
        """``status · code`` (the code only when there is one)."""
        return f"{self.status} · {self.code}" if self.code else self.status


@dataclass(frozen=True, slots=True)
class PageData:
    """Everything one page shows; ``run_id`` is None for a campaign with no runs yet."""

    campaign: str
    run_id: int | None
    runs: int
    generated_at: datetime
    summary: tuple[tuple[str, str], ...] = ()
    statuses: tuple[tuple[str, int], ...] = ()
    funnel: tuple[Step, ...] = ()
    timeline: Timeline | None = None
    histogram: tuple[tuple[str, int], ...] = ()
    failures: tuple[Reason, ...] = ()
    #: more tables as (title, headers, rows of text): tracked links, A/B variants, winner
    tables: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()


def status_counts(outcome: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The non-zero status counts of a campaign_outcomes row, in the status enum's order."""
    return [(s, int(outcome[s])) for s in _STATUS_ORDER if outcome[s]]


def has_read_receipts(channels: set[str], accepted: Mapping[str, int]) -> bool:
    """Whether the funnel has a read step: a channel with read receipts, or a message read."""
    # a provider that reports an SMS as read after all is shown, not hidden
    return bool(channels - NO_READ_RECEIPTS) or accepted.get(MessageStatus.READ.value, 0) > 0


def summary_figures(outcome: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The headline figures of a run, formatted for the page."""
    delivered = outcome["delivered"] + outcome["read"]
    figures = [
        ("run status", outcome["run_status"]),
        ("scheduled", outcome["scheduled_for"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("recipients", f"{outcome['recipients'] or 0:,}"),
        ("sent", f"{outcome['accepted']:,}"),
        ("delivered", f"{delivered:,}"),
        ("delivery rate", cell("delivery_rate", outcome["delivery_rate"])),
        ("estimated cost", cell("cost", outcome["estimated_cost"])),
        ("cost of accepted messages", cell("cost", outcome["cost"])),
        ("cost per delivered", cell("cost", outcome["cost_per_delivered"])),
        ("median to delivery", _seconds(outcome["median_delivery_seconds"])),
        ("95% delivered within", _seconds(outcome["p95_delivery_seconds"])),
    ]
    return tuple(figures)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


#: how the funnel names what was lost between two steps
_LOSS_NAMES = {
    "queued": "waiting to send",
    "sending": "waiting to send",
    "sent": "awaiting a receipt",
    "delivered": "no read receipt",
}


#: (status, accepted by the provider) -> messages
_Split = dict[tuple[str, bool], int]
_Pick = Callable[[str, bool], bool]
_REACHED = frozenset({MessageStatus.DELIVERED.value, MessageStatus.READ.value})


def funnel(
    outcome: Mapping[str, Any], accepted: Mapping[str, int], *, read_receipts: bool = True
) -> tuple[Step, ...]:
    """recipients → queued → sent → delivered → read, from a campaign_outcomes row and the
    run's accepted messages per status.

    queued: recipients not skipped at expansion; sent: accepted by the provider (as the
    views count it); delivered: delivered or read. Each step lists what the previous one
    lost, by status. Without ``read_receipts`` (SMS) the funnel ends at delivered: no
    message of such a channel is ever read, so none is lost before it.
    """
    split: _Split = {}
    for status, n in status_counts(outcome):
        if status != MessageStatus.DUPLICATE:
            split[(status, True)] = accepted.get(status, 0)
            split[(status, False)] = n - accepted.get(status, 0)

    def step(label: str, pick: _Pick, lost: _Pick | None = None) -> Step:
        return Step(label, _total(split, pick), _losses(split, lost) if lost else ())

    steps = (
        step("recipients", lambda s, a: True),
        step("queued", lambda s, a: s not in _SKIPS, lambda s, a: s in _SKIPS),
        step("sent", lambda s, a: a, lambda s, a: not a and s not in _SKIPS),
        step("delivered", lambda s, a: a and s in _REACHED, lambda s, a: a and s not in _REACHED),
    )
    if not read_receipts:
        return steps
    return (
        *steps,
        step("read", lambda s, a: a and s == "read", lambda s, a: a and s == "delivered"),
    )


def _total(split: _Split, pick: _Pick) -> int:
    return sum(n for key, n in split.items() if pick(*key))


def _losses(split: _Split, pick: _Pick) -> tuple[tuple[str, int], ...]:
    """What was lost, by the name of its status, most first."""
    merged: dict[str, int] = {}
    for (status, accepted), n in split.items():
        if n and pick(status, accepted):
            name = _LOSS_NAMES.get(status, status)
            merged[name] = merged.get(name, 0) + n
    return tuple(sorted(merged.items(), key=lambda item: -item[1]))


def timeline_step(rows: Sequence[Mapping[str, Any]]) -> int:
    """Bucket seconds for per-minute (kind, at, messages) rows: at most TIMELINE_BUCKETS."""
    if not rows:
        return 60
    first, last = min(r["at"] for r in rows), max(r["at"] for r in rows)
    span = (last - first).total_seconds() + 60  # the last minute counts whole
    return next((s for s in TIMELINE_STEPS if span / s <= TIMELINE_BUCKETS), TIMELINE_STEPS[-1])


def timeline(rows: Sequence[Mapping[str, Any]], step: int | None = None) -> Timeline | None:
    """(kind, at, messages) rows, each ``at`` a bucket start, merged into ``step``-second
    buckets; by default the rows are per minute, merged as :func:`timeline_step` says."""
    if not rows:
        return None
    size = max(timeline_step(rows), 60) if step is None else step
    start = min(r["at"] for r in rows)
    span = int((max(r["at"] for r in rows) - start).total_seconds())
    buckets = span // size + 1
    series: dict[str, list[int]] = {}
    for row in rows:
        counts = series.setdefault(row["kind"], [0] * buckets)
        counts[int((row["at"] - start).total_seconds()) // size] += row["messages"]
    order = ("sent", "delivered", "read", "failed")
    return Timeline(
        start.astimezone(UTC),
        timedelta(seconds=size),
        tuple(Series(k, tuple(series[k])) for k in order if k in series),
    )


def histogram(counts: Mapping[int, int]) -> tuple[tuple[str, int], ...]:
    """Histogram bins (label, messages) from width_bucket numbers (0 .. len(edges))."""
    return tuple((label, int(counts.get(i, 0))) for i, label in enumerate(LATENCY_LABELS))
