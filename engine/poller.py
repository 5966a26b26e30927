"""The poller: providers that can be asked (``supports_polling``) are asked about sent
messages.

All of them where the provider has no delivery webhook, else only those whose receipt is
overdue. Answers go into the same ``receipts`` log as webhooks, for the reconciler
(:mod:`engine.reconciler`). Safe to run in several daemons at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.providers.base import Adapter
from engine.queries import QUERIES
from engine.receipt_arrival import store_and_apply
from engine.receipts import ReceiptRows, Unstorable
from engine.redact import Redactor
from engine.status import MessageStatus

log = logging.getLogger(__name__)


class Poller:
    """Asks providers about sent messages whose status they may not push to us.

    Accounts in ``webhookless`` (by default those whose adapter says
    ``delivery_webhooks = False``) have every sent message looked up: first ``interval``
    after sending, then after each gap of ``schedule`` in turn (by default at 1, 5, 15 and
    60 minutes after sending), then every ``max_interval`` (6 hours). Any other account
    that ``supports_polling`` has a message looked up only once its receipt is overdue:
    ``poll_after`` after sending, then on the same gaps. Looks stop at the message's
    deadline, the end of the receipt ``window`` or of the campaign's validity, whichever
    comes first, with one last look at the deadline: a message that never reaches a final
    status costs at most ``looks_at_most(deadline)`` lookups, so a 100k campaign on a
    day's validity costs under a million, and its run completes when polling ends.
    Lookups go ``batch`` ids at a time through the adapter (which holds the account's
    concurrency); ``limit``, if given, is awaited with the account and the number of ids
    before each batch (the account's rate limiter).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        adapters: Mapping[str, Adapter[Any]],
        *,
        poll_after: timedelta = timedelta(minutes=10),
        window: timedelta = timedelta(hours=72),
        batch: int = 100,
        interval: timedelta = timedelta(minutes=1),
        schedule: Sequence[timedelta] = (
            timedelta(minutes=4),
            timedelta(minutes=10),
            timedelta(minutes=45),
        ),
        max_interval: timedelta = timedelta(hours=6),
        webhookless: Collection[str] | None = None,
        limit: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.pool = pool
        self.adapters = {name: a for name, a in adapters.items() if a.supports_polling}
        self.poll_after = poll_after
        self.window = window
        self.batch = batch
        self.interval = interval
        self.schedule = list(schedule)
        self.max_interval = max_interval
        self.webhookless = frozenset(
            webhookless
            if webhookless is not None
            else (
                name
                for name, a in self.adapters.items()
                if not getattr(a, "delivery_webhooks", True)
            )
        )
        self.limit = limit
        self.redact = Redactor.of(adapters.values())

    def looks_at_most(self, deadline: timedelta, first: timedelta | None = None) -> int:
        """The most lookups of a message whose deadline is ``deadline`` after sending."""
        at, looks = first if first is not None else self.interval, 1
        gaps = iter(self.schedule)
        while at < deadline:
            at += next(gaps, self.max_interval)
            looks += 1  # the look at ``at``, or the last one, at the deadline
        return looks

    async def poll_once(self) -> int:
        """Look up every message due; return how many receipts the answers added."""
        async with self.pool.acquire() as conn:
            started = await conn.fetchval(QUERIES["db_now"])
        names = list(self.adapters)
        results = await asyncio.gather(
            *(self._poll_account(n, started) for n in names), return_exceptions=True
        )
        total = 0
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.error("polling %s failed", name, exc_info=result, extra={"account": name})
            else:
                total += result
        return total

    async def _poll_account(self, name: str, started: datetime) -> int:
        first = self.interval if name in self.webhookless else self.poll_after
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                claimed = await conn.fetch(
                    QUERIES["claim_polls"],
                    name,
                    first,
                    self.window,
                    self.batch,
                    self.max_interval,
                    started,
                    self.schedule,
                )
            ids = [row["provider_message_id"] for row in claimed if row["poll"]]
            if ids:
                total += await self._look_up(name, ids)
            if len(claimed) < self.batch:
                return total

    async def _look_up(self, name: str, ids: list[str]) -> int:
        if self.limit is not None:
            await self.limit(name, len(ids))
        answers = await self.adapters[name].poll(ids)
        rows = ReceiptRows(self.redact)
        for receipt in answers:
            if receipt.status is not MessageStatus.SENT:  # "still sent" is no news
                try:
                    rows.add(name, receipt)
                except Unstorable as exc:
                    log.warning("polled receipt not stored: %s", exc, extra={"account": name})
        async with self.pool.acquire() as conn:
            return await store_and_apply(conn, rows, "poll")
