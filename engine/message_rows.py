"""One recipient, one ``messages`` row: what a recipient's values decide, as COPY text.

:class:`RunPlan` holds what a run needs to decide each recipient's row (compiled templates,
prices, send timing) and formats the row as a line of PostgreSQL COPY text; the order of
the decisions is in :mod:`engine.expander`'s docstring. Pure: no I/O (the expander
streams the audience in and writes the lines out). This is the expansion's hot path
(``bench/expand.py``): rows are formatted through caches keyed by what decides them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine import sms
from engine.contact_fields import CONTACT_FIELDS
from engine.errors import EngineError
from engine.pricing import NoRateError, PriceTable
from engine.status import MessageStatus
from engine.templates import (
    MessageTemplates,
    RenderError,
    build_context,
    compile_message,
    variables,
)
from engine.timing import SendTiming, recipient_zone

if TYPE_CHECKING:
    import asyncpg

    from engine.config import EngineConfig
    from engine.routes import Router
    from engine.spec import Campaign

COPY_COLUMNS = (
    "run_id",
    "contact_id",
    "phone",
    "channel",
    "account",
    "sender",
    "body",
    "locale",
    "encoding",
    "segments",
    "cost",
    "status",
    "next_attempt_at",
    "expires_at",
    "error_code",
    "error_detail",
)


#: rendered texts kept per run; bounded so memory stays flat on any audience
RENDER_CACHE_SIZE = 50_000
_MISSING = object()
#: a message row, in ``COPY_COLUMNS`` order
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Composed:
    """What a recipient's template values decide, before the number's price and time zone."""

    status: MessageStatus
    body: str | None = None
    locale: str | None = None
    encoding: str | None = None
    segments: int | None = None
    error_code: str | None = None
    error_detail: str | None = None


#: what a row depends on besides the recipient's id and number (see ``RunPlan._decided``)
Decided = tuple[Any, ...] | Composed


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
    tails: dict[Decided, str] = field(default_factory=dict)
    text: CopyText = field(default_factory=lambda: CopyText())
    timing: SendTiming | None = None
    #: the campaign's provider is a route: each recipient's account (and price) is the one
    #: the route would choose now, every account up (engine.routes)
    router: Router | None = None
    route_prices: Mapping[str, PriceTable] = field(default_factory=dict)

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

    def lines(
        self,
        records: list[asyncpg.Record],
        timing: SendTiming,
        cap: int | None,
        stop: threading.Event,
    ) -> list[str]:
        """The COPY lines of a batch; stops early (``RunStopped``) once ``stop`` is set."""
        lines = []
        for rec in records:
            if stop.is_set():
                raise RunStopped
            if (line := self.line(rec, timing, cap)) is not None:
                lines.append(line)
        return lines

    def _decided(
        self, rec: Mapping[str, Any], timing: SendTiming, cap: int | None
    ) -> Decided | None:
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
            return (
                MessageStatus.FREQUENCY_CAPPED,
                "frequency_cap",
                f"{rec['recent']} recent messages",
            )
        composed = self._composed(rec)
        if composed.status is not MessageStatus.QUEUED:
            return composed
        if self.router is not None:
            return self._routed(rec, composed)
        rate = self._rate(rec["phone"])
        if isinstance(rate, NoRateError):
            return composed, rate
        return composed, rate, self._zone(rec)

    def _routed(self, rec: Mapping[str, Any], composed: Composed) -> Decided:
        """A route's recipient: ``(composed, rate, time zone, account)`` on the account
        the route chooses (``(composed, NoRateError, account)`` when it has no price)."""
        assert self.router is not None
        account = self.router.choose(rec["phone"]) or self.account
        prices = self.route_prices[account]
        key = f"{account}\t{rec['phone'][: prices.longest_prefix + 1]}"
        rate = self.rates.get(key)
        if rate is None:
            try:
                rate = prices.rate_for(rec["phone"])
            except NoRateError as exc:
                rate = exc
            if len(self.rates) < RENDER_CACHE_SIZE:
                self.rates[key] = rate
        if isinstance(rate, NoRateError):
            return composed, rate, account
        return composed, rate, self._zone(rec), account

    def _line(self, rec: Mapping[str, Any], decided: Decided) -> str:
        """Only the contact id and number differ between most rows of a run: the rest of
        the line is formatted once per distinct (message, price, time zone) and reused."""
        tail = self.tails.get(decided)
        if tail is None:
            if len(self.tails) >= RENDER_CACHE_SIZE:
                self.tails.clear()
            field = self.text.field
            tail = self.tails[decided] = "\t".join([field(v) for v in self._tail(decided)])
        return f"{self.run_id}\t{rec['id']}\t{rec['phone'].translate(_COPY_ESCAPES)}\t{tail}\n"

    def _tail(self, decided: Decided) -> tuple[Any, ...]:
        """The columns after ``phone`` for what ``_decided`` found."""
        assert self.timing is not None
        account = self.account
        if self.router and isinstance(decided, tuple) and isinstance(decided[0], Composed):
            account = decided[-1]  # a route's recipient (``_routed``)
        head = (self.campaign.channel, account, self.sender)
        if isinstance(decided, Composed):  # rendering failed or too long
            c = decided
            return (
                *head,
                c.body,
                c.locale,
                c.encoding,
                c.segments,
                None,
                c.status.value,
                None,
                None,
                c.error_code,
                c.error_detail,
            )
        if isinstance(decided[0], MessageStatus):  # skipped before rendering
            status, code, detail = decided
            return (*head, None, None, None, None, None, status.value, None, None, code, detail)
        c, rate = decided[0], decided[1]
        if isinstance(rate, NoRateError):
            return (
                *head,
                c.body,
                c.locale,
                c.encoding,
                c.segments,
                None,
                MessageStatus.FAILED.value,
                None,
                None,
                "no_price",
                str(rate),
            )
        next_at, expires = self.timing.times(decided[2])
        return (
            *head,
            c.body,
            c.locale,
            c.encoding,
            c.segments,
            rate * (c.segments or 0),
            MessageStatus.QUEUED.value,
            next_at,
            expires,
            None,
            None,
        )

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
            return Composed(
                MessageStatus.RENDER_ERROR, error_code="render_error", error_detail=str(exc)
            )
        try:
            analysis = sms.analyze_for(rendered.text, self.campaign.message.encoding)
        except sms.NotGsmError as exc:
            return Composed(
                MessageStatus.RENDER_ERROR,
                rendered.text,
                rendered.locale_used,
                error_code="not_gsm7",
                error_detail=str(exc),
            )
        limit = self.campaign.message.max_segments
        if limit is not None and analysis.segments > limit:
            return Composed(
                MessageStatus.TOO_LONG,
                analysis.text,
                rendered.locale_used,
                str(analysis.encoding),
                analysis.segments,
                "too_long",
                f"{analysis.segments} segments (max {limit})",
            )
        return Composed(
            MessageStatus.QUEUED,
            analysis.text,
            rendered.locale_used,
            str(analysis.encoding),
            analysis.segments,
        )

    def _rate(self, phone: str) -> Decimal | NoRateError:
        key = phone[: self.prices.longest_prefix + 1]  # numbers agreeing here share a rate
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
    router = config.router(campaign.provider)
    # a route's rows name its first account until each recipient's is chosen
    first = config.accounts_of(campaign.provider)[0]
    account = config.providers[first]
    return RunPlan(
        run_id=run_id,
        campaign=campaign,
        account=first,
        sender=campaign.sender or account.sender,
        prices=config.price_table(first),
        templates=compile_message(campaign.message),
        zone_name=campaign.schedule.timezone,
        names=template_names(campaign),
        router=router,
        route_prices={a: config.price_table(a) for a in router.accounts} if router else {},
    )


def template_names(campaign: Campaign) -> tuple[str, ...] | None:
    """The variables a campaign's templates use, or None when rendering must not be cached.

    The ``random`` filter makes a render depend on more than its variables.
    """
    sources = [campaign.message.body, *campaign.message.locales.values()]
    if any("random" in source for source in sources):
        return None
    return tuple(sorted(set().union(*(variables(source) for source in sources))))


class RunStopped(EngineError):
    """The run left 'expanding' (cancelled or paused) while it was being expanded."""


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
