"""The shared machinery: accept or reject each message, decide its fate, queue its receipts.

Every family's send endpoint ends in :meth:`Simulator.handle_send`: authenticate, validate,
inject a fault (:mod:`engine.simulator.faults`), then accept or reject each message and
queue its receipts with the :class:`~engine.simulator.poster.ReceiptPoster`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aiohttp import web

from engine.simulator import faults
from engine.simulator.clicker import Clicker
from engine.simulator.faults import Fault
from engine.simulator.model import BadRequest, Rejection, SendItem, SimEvent, SimMessage, Stats
from engine.simulator.poster import ReceiptPoster
from engine.simulator.routes import ProviderRoutes
from engine.simulator.settings import SimulatorSettings


class Simulator:
    """State shared by the route families: settings, randomness, counters, receipts."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.stats = Stats()
        self.messages: dict[tuple[str, str], SimMessage] = {}
        self.references: dict[tuple[str, str], SimMessage] = {}  # (family, reference)
        self.credit = settings.credit_balance
        self.stopping = asyncio.Event()
        self.poster = ReceiptPoster(self)
        self.clicker = Clicker(self.rng, self.stats)
        self._serials = itertools.count(1)

    def serial(self) -> int:
        """A fresh number for ids."""
        return next(self._serials)

    async def handle_send(
        self, routes: ProviderRoutes, request: web.Request, bulk: bool
    ) -> web.Response:
        """Authenticate, validate, inject faults, accept or reject, answer."""
        self.stats.requests += 1
        if not routes.authorized(request):
            self.stats.unauthorized += 1
            return routes.error(401, "unauthorized", "missing or wrong credentials")
        try:
            items = routes.parse_send(await request.read(), bulk)
        except BadRequest as exc:
            self.stats.bad_requests += 1
            return routes.error(400, exc.code, exc.detail)
        fault = await faults.draw(routes.settings, self.rng, self.stats)
        if fault is Fault.RATE_LIMITED:
            response = routes.error(429, "rate_limited", "too many requests")
            response.headers["Retry-After"] = f"{routes.settings.retry_after:g}"
            return response
        if fault is Fault.SERVER_ERROR:
            return routes.error(500, "internal_error", "simulated server error")
        if routes.posts_receipts:
            await self.poster.room()
        outcomes = [self._accept(routes, item) for item in items]
        await self._await_early(outcomes)
        if fault is Fault.TIMEOUT:
            await faults.hang(routes.settings.hang, self.stopping)
        return routes.send_response(outcomes, bulk)

    def _accept(self, routes: ProviderRoutes, item: SendItem) -> SimMessage | Rejection:
        self.stats.messages += 1
        key = (routes.family, item.reference or "")
        if routes.dedupes_references and item.reference and key in self.references:
            self.stats.duplicates += 1
            return self.references[key]
        rejection = item.error
        if rejection is None and item.to.endswith(routes.settings.reject_suffixes):
            rejection = routes.blocked(item)
        if rejection is not None:
            self.stats.rejected += 1
            return rejection
        message = SimMessage(
            routes.new_id(self.serial()), item.to, item.body, item.reference, callback=item.callback
        )
        self.stats.accepted += 1
        self.stats.per_number[item.to] += 1
        self.credit -= 1
        self._decide(routes, message)
        if routes.keeps_messages:
            self.messages[(routes.family, message.id)] = message
        if routes.dedupes_references and item.reference:
            self.references[key] = message
        return message

    def _decide(self, routes: ProviderRoutes, message: SimMessage) -> None:
        """Pick the message's fate and queue its receipts."""
        settings, rng = routes.settings, self.rng
        draw = rng.random()
        undelivered = min(settings.undelivered, 1 - settings.delivered)
        message.final = (
            "delivered"
            if draw < settings.delivered
            else "undelivered"
            if draw < settings.delivered + undelivered
            else "failed"
        )
        delay = rng.uniform(*settings.receipt_delay)
        now, wall = asyncio.get_running_loop().time(), datetime.now(UTC)
        message.settles_at = now + delay
        if message.final == "delivered":
            self.clicker.maybe_click(settings, message.body, delay)
        if not routes.posts_receipts or (settings.webhook_url is None and message.callback is None):
            return
        final = SimEvent(
            f"evt-{self.serial()}",
            message.final,
            wall + timedelta(seconds=delay),
            now + delay,
            message,
        )
        events = [final]
        if settings.sent_receipts:
            sent_due = final.due + 0.005 if rng.random() < settings.out_of_order else now
            events.append(SimEvent(f"evt-{self.serial()}", "sent", wall, sent_due, message))
        if rng.random() < settings.duplicates:
            events.append(replace(final, due=final.due + 0.005))
        if rng.random() < settings.early_receipts:
            first = min(events, key=lambda e: e.due)
            first.due = now
            first.posted = message.early = asyncio.Event()
        for event in events:
            self.poster.submit(routes, event)

    async def _await_early(self, outcomes: Sequence[SimMessage | Rejection]) -> None:
        """Hold the response until early receipts were posted (at most 2 s)."""
        waits = [o.early.wait() for o in outcomes if isinstance(o, SimMessage) and o.early]
        if waits:
            with suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.gather(*waits)

    def inbound(self, routes: ProviderRoutes, extra: dict[str, str]) -> None:
        """Queue a reply for a family's webhook."""
        loop_now, wall = asyncio.get_running_loop().time(), datetime.now(UTC)
        self.poster.submit(
            routes, SimEvent(f"in-{self.serial()}", "inbound", wall, loop_now, extra=extra)
        )
