"""``POST /webhooks/{account}``: provider callbacks, stored durably before they are answered.

For every call, in this order:

==========================  ==============================================================
unknown account             404
not authentic               401, body not read: the account's secret did not come where
                            its provider puts it (a header, or ``?secret=``), compared in
                            constant time by the adapter. An account with no
                            ``webhook_secret`` answers 401 to everything (an open endpoint
                            would let anyone fake receipts and opt-outs), except accounts
                            of the engine's own ``simulator`` type, so the demo works.
unreadable                  400, logged with a short excerpt: the adapter raised
                            MalformedWebhook (or could not decode the body)
stored                      200, only once :meth:`ReceiptWriter.write` committed it
not stored                  503 (the database is out of reach, the daemon is stopping, or
                            the commit took longer than ``answer_within``): every provider
                            retries a 5xx, and a repeat is deduplicated
==========================  ==============================================================

A well-formed event with a status we do not know is stored (status NULL) and logged, not
refused. Nothing here blocks on anything but the group commit, so calls are answered in
milliseconds under load (Zenvia counts a reply slower than 1 s as a failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from engine.providers.base import Adapter, MalformedWebhook, WebhookEvents
from engine.receipts import ReceiptWriter

log = logging.getLogger(__name__)

#: how much of a refused body goes into the log
EXCERPT = 200
#: errors an adapter may raise on a body it cannot read, beyond MalformedWebhook
_UNREADABLE = (MalformedWebhook, ValueError, TypeError, KeyError, IndexError, AttributeError)


@dataclass(slots=True)
class WebhookStats:
    """Calls by ``(account, result)`` and events stored by account, for metrics.

    Results: ``accepted``, ``unauthorized``, ``malformed``, ``failed`` (503). Calls to
    account names we do not have are counted in ``unknown_account`` alone, so a scanner
    cannot grow the label set.
    """

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    unknown_account: int = 0
    receipts: Counter[str] = field(default_factory=Counter)
    inbound: Counter[str] = field(default_factory=Counter)
    opt_changes: Counter[str] = field(default_factory=Counter)

    def total(self, result: str) -> int:
        """Calls with this result, over all accounts."""
        return sum(n for (_, outcome), n in self.calls.items() if outcome == result)

    @property
    def received(self) -> int:
        """Calls to known accounts, whatever their result."""
        return sum(self.calls.values())

    @property
    def unauthorized(self) -> int:
        """Calls refused with 401."""
        return self.total("unauthorized")

    @property
    def malformed(self) -> int:
        """Calls refused with 400."""
        return self.total("malformed")

    def count(self, account: str, events: WebhookEvents) -> None:
        """Events of one stored call."""
        self.receipts[account] += len(events.receipts)
        self.inbound[account] += len(events.inbound)
        self.opt_changes[account] += len(events.opt_changes)


class WebhookHandler:
    """The webhook endpoint of every configured account."""

    def __init__(self, adapters: Mapping[str, Adapter[Any]], writer: ReceiptWriter, *,
                 open_types: Collection[str] = ("simulator",),
                 answer_within: float = 4.0) -> None:
        self.adapters = dict(adapters)
        self.writer = writer
        #: a call not stored by then is answered 503 (its events are still written, and the
        #: provider's retry is deduplicated): under its read timeout (Zenvia's is 5 s, and
        #: a timeout counts as ten failures there)
        self.answer_within = answer_within
        self.stats = WebhookStats()
        self._open = frozenset(name for name, adapter in self.adapters.items()
                               if adapter.account.webhook_secret is None
                               and adapter.account.type in open_types)
        for name, adapter in self.adapters.items():
            if adapter.account.webhook_secret is None:
                log.warning("%s has no webhook_secret: its webhook %s", name,
                            "accepts any caller" if name in self._open
                            else "refuses every call (401)", extra={"account": name})

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the daemon's app."""
        return [web.post("/webhooks/{account}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        """Authenticate, parse, store, answer."""
        name = request.match_info["account"]
        adapter = self.adapters.get(name)
        if adapter is None:
            self.stats.unknown_account += 1
            return _answer(404, "unknown account")
        if not self._authentic(name, adapter, request):
            self.stats.calls[name, "unauthorized"] += 1
            log.warning("webhook call without the right secret refused", extra={
                "account": name, "remote": request.remote})
            return _answer(401, "unauthorized")
        body = await request.read()
        events = self._parse(name, adapter, request, body)
        if events is None:
            self.stats.calls[name, "malformed"] += 1
            return _answer(400, "malformed")
        return await self._store(name, events)

    def _authentic(self, name: str, adapter: Adapter[Any], request: web.Request) -> bool:
        if adapter.account.webhook_secret is None:
            return name in self._open
        return adapter.webhook_authentic(request.headers, request.query)

    @staticmethod
    def _parse(name: str, adapter: Adapter[Any], request: web.Request,
               body: bytes) -> WebhookEvents | None:
        try:
            return adapter.parse_webhook(request.headers.get("Content-Type", ""), body,
                                         request.query)
        except _UNREADABLE as exc:
            excerpt = body[:EXCERPT].decode(errors="replace")
            log.warning("malformed webhook refused: %s: %r", exc, excerpt,
                        exc_info=not isinstance(exc, MalformedWebhook),
                        extra={"account": name})
            return None

    async def _store(self, name: str, events: WebhookEvents) -> web.Response:
        try:
            async with asyncio.timeout(self.answer_within):
                await self.writer.write(name, events)
        except Exception as exc:  # any storage failure: 503, and the provider retries
            self.stats.calls[name, "failed"] += 1
            log.error("webhook call not stored, answered 503: %r", exc, extra={"account": name})
            return _answer(503, "not stored, try again")
        self.stats.calls[name, "accepted"] += 1
        self.stats.count(name, events)
        return _answer(200, "ok")


def _answer(status: int, text: str) -> web.Response:
    return web.Response(body=_BODIES.get(text) or orjson.dumps({"status": text}), status=status,
                        content_type="application/json")


#: the answers, encoded once (the 200 is on the hot path)
_BODIES = {text: orjson.dumps({"status": text}) for text in (
    "ok", "unknown account", "unauthorized", "malformed", "not stored, try again")}
