"""Expansion: one run of a campaign becomes one ``messages`` row per recipient.

The audience is resolved in SQL and streamed in keyset batches (contact id order), so
memory stays flat however large it is. For each recipient the expander decides, in this
order: excluded (no row), ``suppressed``, ``frequency_capped``, ``render_error`` (with
the missing variable), ``too_long`` (over ``max_segments``), ``failed``/``no_price`` (no
rate for the destination), else ``queued`` with its encoding, segments, cost,
``next_attempt_at`` (after the recipient's quiet hours) and ``expires_at``.

Each batch is written with COPY, and the run's checkpoint (the last contact id) is saved
in the same transaction, so a crash resumes exactly after the last committed batch and no
recipient is queued twice (the unique (run, phone) constraint backs this up). While one
batch is being written, the next is fetched and computed: PostgreSQL and Python overlap.
A batch is computed in a worker thread, so however slow its templates (each render is
bounded by :mod:`engine.template_limits`), the event loop keeps serving webhooks and
heartbeats; a render past a limit, or holding a character PostgreSQL text cannot store
(NUL), is that recipient's ``render_error``.

When the audience is exhausted the budget gate runs: the estimated cost of the queued
messages is compared with ``limits.budget``; within it the run moves to ``sending``,
over it the run becomes ``over_budget`` and nothing is sent.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import ValidationError

from engine import sms
from engine.config import EngineConfig
from engine.contact_fields import CONTACT_FIELDS
from engine.errors import EngineError
from engine.phones import number_zone
from engine.pricing import NoRateError, PriceTable
from engine.queries import QUERIES
from engine.spec import Campaign, FrequencyCap
from engine.status import MessageStatus, RunStatus
from engine.templates import (
    MessageTemplates,
    RenderError,
    build_context,
    compile_message,
    variables,
)

log = logging.getLogger(__name__)

#: pg_advisory_lock class for "this run is being expanded"
RUN_LOCK_CLASS = 0x6578

COPY_COLUMNS = (
    "run_id", "contact_id", "phone", "channel", "account", "sender", "body", "locale",
    "encoding", "segments", "cost", "status", "next_attempt_at", "expires_at",
    "error_code", "error_detail",
)



@dataclass(frozen=True, slots=True)
class ExpansionResult:
    """What one expansion did."""

    run_id: int
    status: RunStatus
    recipients: int
    counts: Mapping[str, int]
    estimated_cost: Decimal
    reason: str | None = None


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


#: rendered texts kept per run; bounded so memory stays flat on any audience
RENDER_CACHE_SIZE = 50_000
_MISSING = object()
#: a message row, in ``COPY_COLUMNS`` order
Row = tuple[Any, ...]

#: (status, body, locale, encoding, segments, error_code, error_detail): what a recipient's
#: template values decide, before the number's price and time zone are applied
Composed = tuple[MessageStatus, str | None, str | None, str | None, int | None,
                 str | None, str | None]


@dataclass(slots=True)
class RunPlan:
    """Everything needed to turn a recipient into a row, prepared once per run.

    Rendering and SMS analysis depend only on the values of the variables the templates
    name (and the locale chosen), so their result is cached under those values: recipients
    who share a first name, tier and locale share one render. A template that names the
    phone number (unique per recipient) simply never hits the cache. Likewise the COPY text
    of a row after the phone number depends only on that render, the number's price and its
    time zone, so it is formatted once per distinct combination.
    """

    run_id: int
    campaign: Campaign
    account: str
    sender: str | None
    prices: PriceTable
    templates: MessageTemplates
    zone_name: str
    names: tuple[str, ...] | None  # the variables the templates use; None: do not cache
    cache: dict[tuple[Any, ...], Composed] = field(default_factory=dict)
    rates: dict[str, Decimal | NoRateError] = field(default_factory=dict)
    #: COPY text of everything after the phone number, by what decides it (see ``_line``)
    tails: dict[tuple[Any, ...], str] = field(default_factory=dict)
    text: CopyText = field(default_factory=lambda: CopyText())
    timing: SendTiming | None = None

    def decide(self, rec: Mapping[str, Any], timing: SendTiming, cap: int | None) -> Row | None:
        """The message row for one recipient (``COPY_COLUMNS``), or None when excluded."""
        decided = self._decided(rec, timing, cap)
        if decided is None:
            return None
        return (self.run_id, rec["id"], rec["phone"], *self._tail(decided))

    def line(self, rec: Mapping[str, Any], timing: SendTiming, cap: int | None) -> str | None:
        """The same row as a line of COPY text, or None when excluded (the hot path)."""
        decided = self._decided(rec, timing, cap)
        return None if decided is None else self._line(rec, decided)

    def lines(self, records: list[asyncpg.Record], timing: SendTiming, cap: int | None,
              stop: threading.Event) -> list[str]:
        """The COPY lines of a batch; stops early (``RunStopped``) once ``stop`` is set."""
        lines = []
        for rec in records:
            if stop.is_set():
                raise RunStopped
            if (line := self.line(rec, timing, cap)) is not None:
                lines.append(line)
        return lines

    def _decided(self, rec: Mapping[str, Any], timing: SendTiming,
                 cap: int | None) -> tuple[Any, ...] | None:
        """What the row depends on besides the recipient's id and number: ``(status, code,
        detail)`` for a recipient skipped before rendering, the ``Composed`` render when it
        did not come out sendable, ``(composed, NoRateError)`` when the number has no
        price, else ``(composed, rate, time zone)``."""
        if rec["excluded"]:
            return None
        if timing is not self.timing:  # the tails hold send times: they are per timing
            self.tails.clear()
            self.timing = timing
        if rec["suppressed"]:
            return MessageStatus.SUPPRESSED, "suppressed", "opted out"
        if cap is not None and rec["recent"] >= cap:
            return (MessageStatus.FREQUENCY_CAPPED, "frequency_cap",
                    f"{rec['recent']} recent messages")
        composed = self._composed(rec)
        if composed[0] is not MessageStatus.QUEUED:
            return composed
        rate = self._rate(rec["phone"])
        if isinstance(rate, NoRateError):
            return composed, rate
        return composed, rate, self._zone(rec)

    def _line(self, rec: Mapping[str, Any], decided: tuple[Any, ...]) -> str:
        """Only the contact id and number differ between most rows of a run: the rest of
        the line is formatted once per distinct (message, price, time zone) and reused."""
        tail = self.tails.get(decided)
        if tail is None:
            if len(self.tails) >= RENDER_CACHE_SIZE:
                self.tails.clear()
            field = self.text.field
            tail = self.tails[decided] = "\t".join([field(v) for v in self._tail(decided)])
        return (f"{self.run_id}\t{rec['id']}\t{rec['phone'].translate(_COPY_ESCAPES)}\t"
                f"{tail}\n")

    def _tail(self, decided: tuple[Any, ...]) -> tuple[Any, ...]:
        """The columns after ``phone`` for what ``_decided`` found."""
        assert self.timing is not None
        head = (self.campaign.channel, self.account, self.sender)
        if len(decided) == 3 and isinstance(decided[0], MessageStatus):  # excluded
            status, code, detail = decided
            return (*head, None, None, None, None, None, status.value, None, None, code,
                    detail)
        if isinstance(decided[0], MessageStatus):  # rendering failed or too long
            status, body, locale, encoding, segments, code, detail = decided
            return (*head, body, locale, encoding, segments, None, status.value, None, None,
                    code, detail)
        composed, rate = decided[0], decided[1]
        _, body, locale, encoding, segments, _, _ = composed
        if isinstance(rate, NoRateError):
            return (*head, body, locale, encoding, segments, None, MessageStatus.FAILED.value,
                    None, None, "no_price", str(rate))
        next_at, expires = self.timing.times(decided[2])
        return (*head, body, locale, encoding, segments, rate * (segments or 0),
                MessageStatus.QUEUED.value, next_at, expires, None, None)

    def _composed(self, rec: Mapping[str, Any]) -> Composed:
        key = self._key(rec)
        if key is None:
            return self._compose(rec)
        try:
            found = self.cache.get(key)
        except TypeError:  # an unhashable attribute value (a list, an object)
            return self._compose(rec)
        if found is None:
            if len(self.cache) >= RENDER_CACHE_SIZE:
                self.cache.clear()
            found = self.cache[key] = self._compose(rec)
        return found

    def _key(self, rec: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if self.names is None:
            return None
        attributes = rec["attributes"] or {}
        values: list[Any] = [self.templates.choose(rec["locale"])[0]]
        for name in self.names:
            value = rec[name] if name in CONTACT_FIELDS else None
            if value is None:
                value = attributes.get(name)
            values.append(self.campaign.vars.get(name, _MISSING) if value is None else value)
        return tuple(values)

    def _compose(self, rec: Mapping[str, Any]) -> Composed:
        fields = {name: rec[name] for name in CONTACT_FIELDS}
        context = build_context(fields, rec["attributes"] or {}, self.campaign.vars)
        try:
            rendered = self.templates.render(context, rec["locale"])
        except RenderError as exc:
            return MessageStatus.RENDER_ERROR, None, None, None, None, "render_error", str(exc)
        try:
            analysis = sms.analyze_for(rendered.text, self.campaign.message.encoding)
        except sms.NotGsmError as exc:
            return (MessageStatus.RENDER_ERROR, rendered.text, rendered.locale_used, None, None,
                    "not_gsm7", str(exc))
        limit = self.campaign.message.max_segments
        if limit is not None and analysis.segments > limit:
            return (MessageStatus.TOO_LONG, analysis.text, rendered.locale_used,
                    str(analysis.encoding), analysis.segments, "too_long",
                    f"{analysis.segments} segments (max {limit})")
        return (MessageStatus.QUEUED, analysis.text, rendered.locale_used, str(analysis.encoding),
                analysis.segments, None, None)

    def _rate(self, phone: str) -> Decimal | NoRateError:
        key = phone[:self.prices.longest_prefix + 1]  # numbers agreeing here share a rate
        rate = self.rates.get(key)
        if rate is None:
            try:
                rate = self.prices.rate_for(phone)
            except NoRateError as exc:
                rate = exc
            if len(self.rates) < RENDER_CACHE_SIZE:
                self.rates[key] = rate
        return rate

    def _zone(self, rec: Mapping[str, Any]) -> str:
        return recipient_zone(rec["timezone"], rec["phone"], self.zone_name)


def plan_run(run_id: int, campaign: Campaign, config: EngineConfig) -> RunPlan:
    """Compile templates and prices for one run (once, not per recipient)."""
    account = config.providers[campaign.provider]
    return RunPlan(
        run_id=run_id, campaign=campaign, account=campaign.provider,
        sender=campaign.sender or account.sender, prices=config.price_table(campaign.provider),
        templates=compile_message(campaign.message), zone_name=campaign.schedule.timezone,
        names=template_names(campaign),
    )


def template_names(campaign: Campaign) -> tuple[str, ...] | None:
    """The variables a campaign's templates use, or None when rendering must not be cached.

    The ``random`` filter makes a render depend on more than its variables.
    """
    sources = [campaign.message.body, *campaign.message.locales.values()]
    if any("random" in source for source in sources):
        return None
    return tuple(sorted(set().union(*(variables(source) for source in sources))))


class RunStopped(Exception):
    """The run left 'expanding' (cancelled or paused) while it was being expanded."""


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no provider account {exc.args[0]!r} in the configuration"
    if isinstance(exc, ValidationError):
        return f"the stored campaign is invalid: {exc.error_count()} error(s)"
    return str(exc)


def credits(amount: Decimal) -> str:
    """An amount of credits as people write it: 5, 2.5, 0.0125."""
    return format(amount.normalize(), "f")


def run_lock_key(run_id: int) -> int:
    """The advisory-lock key an expander holds on a run while expanding it."""
    return (RUN_LOCK_CLASS << 40) | run_id


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class Expander:
    """Claims due runs and expands them, one at a time per instance."""

    def __init__(self, pool: asyncpg.Pool, config: EngineConfig, worker: str, *,
                 batch_size: int = 5000, clock: Callable[[], datetime] | None = None,
                 balance: Callable[[str], Awaitable[Decimal | None]] | None = None) -> None:
        self.balance = balance
        self.pool = pool
        self.config = config
        self.worker = worker
        self.batch_size = batch_size
        self.clock = clock or utcnow

    async def run_once(self) -> ExpansionResult | None:
        """Claim one run (new, or interrupted by a dead expander) and expand it."""
        async with self.pool.acquire() as conn:
            run_id = await self._claim(conn)
            if run_id is None:
                return None
            try:
                return await self.expand(conn, run_id)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", run_lock_key(run_id))

    async def _claim(self, conn: asyncpg.Connection) -> int | None:
        async with conn.transaction():
            run_id: int | None = await conn.fetchval(QUERIES["claim_run"], self.clock())
            if run_id is not None:
                await conn.execute("SELECT pg_advisory_lock($1)", run_lock_key(run_id))
                await conn.execute(QUERIES["mark_expanding"], run_id, self.worker)
                return run_id
        for row in await conn.fetch(QUERIES["orphaned_expansions"]):
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", run_lock_key(row["id"])):
                log.warning("resuming interrupted expansion", extra={"run": row["id"]})
                await conn.execute(QUERIES["mark_expanding"], row["id"], self.worker)
                return int(row["id"])
        return None

    async def expand(self, conn: asyncpg.Connection, run_id: int) -> ExpansionResult:
        """Expand one claimed run from its checkpoint to the end, then apply the budget gate."""
        run = await conn.fetchrow(QUERIES["run_for_expansion"], run_id)
        try:
            campaign = Campaign.from_spec(run["spec"] or {})
            plan = plan_run(run_id, campaign, self.config)
        except (ValidationError, EngineError, KeyError) as exc:
            # a run that cannot be expanded (its account was removed from the config, its
            # stored spec is unreadable) fails with the reason; other runs go on
            reason = f"cannot expand: {_reason(exc)}"
            await conn.execute(QUERIES["fail_run"], run_id, reason)
            log.error(reason, extra={"run": run_id})
            return ExpansionResult(run_id, RunStatus.FAILED, 0, {}, Decimal(0), reason)
        sources = await Sources.resolve(conn, campaign, run["name"])
        after = int((run["checkpoint"] or {}).get("after", 0))
        if after == 0:
            await conn.execute(QUERIES["insert_invalid_recipients"], run_id, run["campaign_id"],
                               campaign.channel, campaign.provider)
        timing = SendTiming(campaign, max(self.clock(), run["scheduled_for"]))
        try:
            await self._stream(conn, plan, sources, timing, after)
        except RunStopped:
            log.info("expansion stopped: run left 'expanding'", extra={"run": run_id})
            return await self._result(conn, run_id, None)
        return await self._finish(conn, run_id, campaign, sources)

    async def _stream(self, conn: asyncpg.Connection, plan: RunPlan, sources: Sources,
                      timing: SendTiming, after: int) -> None:
        cap = sources.cap_count
        async with self.pool.acquire() as writer_conn:
            pending: asyncio.Task[None] | None = None
            try:
                async for records in sources.batches(conn, plan.campaign.channel, self.clock(),
                                                     after, self.batch_size):
                    lines = await _lines_off_loop(plan, records, timing, cap)
                    if pending is not None:
                        await pending
                    payload = "".join(lines).encode()
                    pending = asyncio.create_task(
                        _write(writer_conn, plan.run_id, payload, records[-1]["id"]))
                if pending is not None:
                    await pending
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)

    async def _finish(self, conn: asyncpg.Connection, run_id: int, campaign: Campaign,
                      sources: Sources) -> ExpansionResult:
        duplicates = await sources.duplicates(conn)
        counts, cost = await _tally(conn, run_id)
        if duplicates:
            counts[MessageStatus.DUPLICATE.value] = int(duplicates)
        balance = await self._balance(campaign.provider) if counts.get("queued") else None
        status, reason = budget_gate(campaign, counts, cost, balance)
        recipients = sum(n for key, n in counts.items() if key != MessageStatus.DUPLICATE.value)
        await conn.execute(QUERIES["finish_expansion"], run_id, status.value, reason,
                           recipients, cost, counts)
        if status is RunStatus.SENDING:
            await conn.execute(QUERIES["notify_work"], f"run:{run_id}")
        log.info("expanded run", extra={"run": run_id, "campaign": campaign.name,
                                        "recipients": recipients, "status": status.value})
        return ExpansionResult(run_id, status, recipients, counts, cost, reason)

    async def _balance(self, account: str) -> Decimal | None:
        if self.balance is None:
            return None
        try:
            return await self.balance(account)
        except EngineError as exc:  # an unreadable balance must not stop a campaign
            log.warning("cannot read the balance of %s: %s", account, exc)
            return None

    async def _result(self, conn: asyncpg.Connection, run_id: int,
                      reason: str | None) -> ExpansionResult:
        counts, cost = await _tally(conn, run_id)
        status = RunStatus(await conn.fetchval(
            "SELECT status::text FROM campaign_runs WHERE id = $1", run_id))
        return ExpansionResult(run_id, status, sum(counts.values()), counts, cost, reason)


async def _lines_off_loop(plan: RunPlan, records: list[asyncpg.Record], timing: SendTiming,
                          cap: int | None) -> list[str]:
    """A batch's COPY lines, computed in a worker thread.

    Rendering is CPU work bounded per message (see engine.template_limits) but not per batch,
    so it runs off the event loop: webhooks, /healthz and heartbeats go on meanwhile. One
    batch at a time touches the plan's caches. When the expansion is cancelled, the thread
    stops at the next recipient instead of finishing the batch.
    """
    stop = threading.Event()
    try:
        return await asyncio.to_thread(plan.lines, records, timing, cap, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class CopyText:
    """Values as PostgreSQL COPY text, each distinct value formatted once.

    Most values of a run repeat (the rendered bodies, send times, costs), so formatting
    through a bounded cache costs a dict lookup per field instead of asyncpg's binary
    encoding of every value; :meth:`RunPlan._line` goes further and reuses whole tails of
    rows.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.cache: dict[Any, str] = {}
        self.limit = limit

    def field(self, value: Any) -> str:
        """One value as COPY text (``\\N`` for NULL)."""
        if value is None:
            return "\\N"
        if type(value) is int:
            return str(value)
        text = self.cache.get(value)
        if text is None:
            text = str(value).translate(_COPY_ESCAPES)
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[value] = text
        return text


async def _write(conn: asyncpg.Connection, run_id: int, payload: bytes, after: int) -> None:
    async with conn.transaction():
        if payload:
            await conn.copy_to_table("messages", source=io.BytesIO(payload),
                                     columns=COPY_COLUMNS, format="text")
        if await conn.fetchval(QUERIES["save_checkpoint"], run_id, {"after": after}) is None:
            raise RunStopped


async def _tally(conn: asyncpg.Connection, run_id: int) -> tuple[dict[str, int], Decimal]:
    counts: dict[str, int] = {}
    cost = Decimal(0)
    for row in await conn.fetch(QUERIES["run_tally"], run_id):
        counts[row["status"]] = int(row["n"])
        cost += row["cost"]
    return counts, cost


def budget_gate(campaign: Campaign, counts: Mapping[str, int], cost: Decimal,
                balance: Decimal | None = None) -> tuple[RunStatus, str | None]:
    """The run's status after expansion: sending, over_budget, or completed if nothing to send.

    The provider account's credit balance, where the provider reports one, is a second
    budget: a run the account cannot pay for does not start either.
    """
    budget = campaign.limits.budget
    if budget is not None and cost > budget:
        return RunStatus.OVER_BUDGET, (
            f"estimated cost {credits(cost)} credits exceeds the budget of {credits(budget)}"
            " credits")
    if balance is not None and cost > balance:
        return RunStatus.OVER_BUDGET, (
            f"estimated cost {credits(cost)} credits exceeds the balance of "
            f"{credits(balance)} credits on account {campaign.provider}")
    if not counts.get(MessageStatus.QUEUED.value):
        return RunStatus.COMPLETED, "no recipient to send to"
    return RunStatus.SENDING, None


@dataclass(frozen=True, slots=True)
class Sources:
    """A campaign's audience as group ids and phones, resolved once per run."""

    groups: list[int]
    excluded: list[int]
    listed: list[str]
    frequency_cap: FrequencyCap | None

    @classmethod
    async def resolve(cls, conn: asyncpg.Connection, campaign: Campaign,
                      name: str) -> Sources:
        audience = campaign.audience
        names = list(audience.groups)
        if audience.file is not None:
            names.append(file_group(name))
        found = {row["name"]: row["id"]
                 for row in await conn.fetch(QUERIES["group_ids"],
                                             names + list(audience.exclude_groups))}
        return cls(
            groups=[found[n] for n in names if n in found],
            excluded=[found[n] for n in audience.exclude_groups if n in found],
            listed=list(audience.contacts),
            frequency_cap=campaign.limits.frequency_cap,
        )

    @property
    def cap_count(self) -> int | None:
        """At most this many recent messages per recipient, or None without a cap."""
        return None if self.frequency_cap is None else self.frequency_cap.count

    async def batches(self, conn: asyncpg.Connection, channel: str, now: datetime,
                      after: int, size: int) -> AsyncIterator[list[asyncpg.Record]]:
        """The audience after contact id ``after``, in keyset batches of ``size``."""
        since = None if self.frequency_cap is None else now - self.frequency_cap.period
        while True:
            records = await conn.fetch(QUERIES["audience_batch"], after, self.groups,
                                       self.listed, self.excluded, channel, since, size)
            if not records:
                return
            yield records
            after = records[-1]["id"]

    async def duplicates(self, conn: asyncpg.Connection) -> int:
        """Recipients reached through more than one source, counted once per extra source."""
        return int(await conn.fetchval(QUERIES["audience_duplicates"], self.groups, self.listed))


def file_group(campaign_name: str) -> str:
    """The group that holds a campaign's audience-file contacts."""
    return f"campaign:{campaign_name}"
