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
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine import links, sms
from engine.contact_fields import CONTACT_FIELDS
from engine.copy_text import COPY_ESCAPES as _COPY_ESCAPES
from engine.copy_text import CopyText
from engine.errors import EngineError
from engine.pricing import NoRateError, PriceTable
from engine.status import MessageStatus
from engine.templates import (
    MessageTemplates,
    RenderError,
    build_context,
)
from engine.timing import SendTiming, recipient_zone
from engine.variants import LEFT_OUT, Split

if TYPE_CHECKING:
    import asyncpg

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
    "variant",
)
#: columns of ``link_codes`` written with the messages (see ``RunPlan.take_links``)
LINK_COLUMNS = ("code", "run_id", "phone", "link_no", "url")


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
    variant: str | None = None
    targets: tuple[str, ...] = ()  # tracked links' targets; the body holds placeholders
    saved: int = 0  # segments the short links saved


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
    #: tracked links: the base URL and the UTM parameters per variant (None: not tracked)
    link_plan: links.LinkPlan | None = None
    split: Split | None = None
    variant_templates: dict[str, MessageTemplates] = field(default_factory=dict)
    #: COPY text of ``link_codes`` for the rows formatted since the last ``take_links``
    link_lines: list[str] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    #: segments and credits the short links saved over the rows decided (the preview's)
    saved_segments: int = 0
    saved_credits: Decimal = Decimal(0)
    #: the campaign's provider is a route: each recipient's account (and price) is the one
    #: the route would choose now, every account up (engine.routes)
    router: Router | None = None
    route_prices: Mapping[str, PriceTable] = field(default_factory=dict)

    def decide(self, rec: Mapping[str, Any], timing: SendTiming, cap: int | None) -> Row | None:
        """The message row for one recipient (``COPY_COLUMNS``), or None when excluded."""
        decided = self._decided(rec, timing, cap)
        if decided is None:
            return None
        tail = self._tail(decided)
        composed = _composed_of(decided)
        if composed is not None and composed.targets and self.link_plan is not None:
            codes = self._codes(rec["phone"], composed.targets)
            tail = (*tail[:3], links.fill(tail[3], self.link_plan.base_url, codes), *tail[4:])
            if not isinstance(decided, Composed) and not isinstance(decided[1], NoRateError):
                self.saved_segments += composed.saved
                self.saved_credits += decided[1] * composed.saved
        return (self.run_id, rec["id"], rec["phone"], *tail)

    def take_links(self) -> list[str]:
        """The ``link_codes`` COPY lines of the rows formatted since the last call."""
        taken, self.link_lines = self.link_lines, []
        self.codes.clear()
        return taken

    def _codes(self, phone: str, targets: tuple[str, ...]) -> list[str]:
        codes = links.fresh_codes(len(targets), self.codes)
        esc = _COPY_ESCAPES
        for number, (code, target) in enumerate(zip(codes, targets, strict=True), 1):
            self.link_lines.append(
                f"{code}\t{self.run_id}\t{phone.translate(esc)}\t{number}\t{target.translate(esc)}\n"
            )
        return codes

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
        detail, variant)`` for a recipient skipped before rendering, the ``Composed`` render
        when it did not come out sendable, ``(composed, NoRateError)`` when the number has
        no price, else ``(composed, rate, time zone)``. None: no row (excluded, or left out
        of this expansion by a winner test)."""
        if rec["excluded"]:
            return None
        if timing is not self.timing:  # the tails hold send times: they are per timing
            self.tails.clear()
            self.timing = timing
        variant = None if self.split is None else self.split.assign(rec["phone"])
        if variant == LEFT_OUT:  # outside the winner test, or in it once the winner is known
            return None
        if rec["suppressed"]:
            return MessageStatus.SUPPRESSED, "suppressed", "opted out", variant
        if cap is not None and rec["recent"] >= cap:
            return (
                MessageStatus.FREQUENCY_CAPPED,
                "frequency_cap",
                f"{rec['recent']} recent messages",
                variant,
            )
        composed = self._composed(rec, variant)
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
        composed = _composed_of(decided)
        if composed is not None and composed.targets and self.link_plan is not None:
            codes = self._codes(rec["phone"], composed.targets)
            tail = links.fill(tail, self.link_plan.base_url, codes)
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
                c.variant,
            )
        if isinstance(decided[0], MessageStatus):  # skipped before rendering
            status, code, detail, variant = decided
            return (
                *(head + (None,) * 5),
                status.value,
                None,
                None,
                code,
                detail,
                variant,
            )
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
                c.variant,
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
            c.variant,
        )

    def _composed(self, rec: Mapping[str, Any], variant: str | None) -> Composed:
        key = self._key(rec, variant)
        if key is None:
            return self._compose(rec, variant)
        try:
            found = self.cache.get(key)
        except TypeError:  # an unhashable attribute value (a list, an object)
            return self._compose(rec, variant)
        if found is None:
            if len(self.cache) >= RENDER_CACHE_SIZE:
                self.cache.clear()
            found = self.cache[key] = self._compose(rec, variant)
        return found

    def _templates(self, variant: str | None) -> MessageTemplates:
        return self.templates if variant is None else self.variant_templates[variant]

    def _key(self, rec: Mapping[str, Any], variant: str | None) -> tuple[Any, ...] | None:
        if self.names is None:
            return None
        attributes = rec["attributes"] or {}
        values: list[Any] = [variant, self._templates(variant).choose(rec["locale"])[0]]
        for name in self.names:
            value = rec[name] if name in CONTACT_FIELDS else None
            if value is None:
                value = attributes.get(name)
            values.append(self.campaign.vars.get(name, _MISSING) if value is None else value)
        return tuple(values)

    def _compose(self, rec: Mapping[str, Any], variant: str | None) -> Composed:
        composed = self._compose_text(rec, variant)
        return composed if variant is None else replace(composed, variant=variant)

    def _compose_text(self, rec: Mapping[str, Any], variant: str | None) -> Composed:
        fields = {name: rec[name] for name in CONTACT_FIELDS}
        context = build_context(fields, rec["attributes"] or {}, self.campaign.vars)
        try:
            rendered = self._templates(variant).render(context, rec["locale"])
        except RenderError as exc:
            return Composed(
                MessageStatus.RENDER_ERROR, error_code="render_error", error_detail=str(exc)
            )
        text, saved = rendered.text, 0
        targets: tuple[str, ...] = ()
        if self.link_plan is not None:
            shortened = self.link_plan.shorten(text, variant)
            text, targets = shortened.text, shortened.targets
        try:
            analysis = sms.analyze_for(text, self.campaign.message.encoding)
        except sms.NotGsmError as exc:
            return Composed(
                MessageStatus.RENDER_ERROR,
                text,
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
                targets=targets,
            )
        if targets:
            saved = _segments(rendered.text, self.campaign.message.encoding) - analysis.segments
        return Composed(
            MessageStatus.QUEUED,
            analysis.text,
            rendered.locale_used,
            str(analysis.encoding),
            analysis.segments,
            targets=targets,
            saved=saved,
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


def _segments(text: str, mode: sms.Mode) -> int:
    try:
        return sms.analyze_for(text, mode).segments
    except sms.NotGsmError:
        return 0


def _composed_of(decided: Decided) -> Composed | None:
    if isinstance(decided, Composed):
        return decided
    return decided[0] if isinstance(decided[0], Composed) else None


class RunStopped(EngineError):
    """The run left 'expanding' (cancelled or paused) while it was being expanded."""
