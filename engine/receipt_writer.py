"""The receipt writer: what webhooks said, stored durably before they are answered.

Calls are group-committed: every ``write`` waiting within ``flush_interval`` (or until
``max_rows``) shares one batched INSERT, and each caller returns once the batch is
committed (or raises the batch's error). Receipts go to the ``receipts`` log (a provider
event seen before is skipped), each applied to its message in the same transaction where
it can be, and written once (:mod:`engine.receipt_arrival`); replies and opt-in/out
notices go to ``inbound_messages`` and act on ``suppressions`` (the rows are built by
:mod:`engine.receipts`). Safe to run in several daemons at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field

import asyncpg

from engine.errors import EngineError
from engine.providers.base import OPT_IN_WORDS, OPT_OUT_WORDS, WebhookEvents
from engine.queries import QUERIES
from engine.receipt_arrival import Arrivals, store_and_apply
from engine.receipts import HELP_WORDS, InboundRows, Keywords, ReceiptRows
from engine.redact import Redactor

log = logging.getLogger(__name__)


class WriterStopped(EngineError):
    """The receipt writer is not running: the caller should answer "try again later"."""


@dataclass(slots=True)
class _Waiting:
    account: str
    receipts: ReceiptRows
    inbound: InboundRows
    future: asyncio.Future[None]
    since: float

    @property
    def rows(self) -> int:
        return len(self.receipts) + len(self.inbound)


@dataclass(slots=True)
class WriterStats:
    """What the writer stored (cumulative), for metrics."""

    flushes: int = 0
    failed_flushes: int = 0
    receipts: Counter[str] = field(default_factory=Counter)  # account -> receipts written
    duplicates: int = 0  # receipts whose event was already stored
    inbound: int = 0
    suppressed: int = 0
    lifted: int = 0


#: errors that say the database is out of reach (any request would fail alike)
_UNAVAILABLE = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)


class ReceiptWriter:
    """Group-committed, durable storage of webhook events (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_interval: float = 0.005,
        max_rows: int = 1000,
        opt_out_keywords: Iterable[str] = OPT_OUT_WORDS,
        opt_in_keywords: Iterable[str] = OPT_IN_WORDS,
        help_keywords: Iterable[str] = HELP_WORDS,
        on_flush: Callable[[int], None] | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.pool = pool
        #: masks the accounts' secrets in every payload stored
        self.redact = redact or Redactor()
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self.keywords = Keywords.of(opt_out_keywords, opt_in_keywords, help_keywords)
        #: called with the number of new receipts after each flush (to wake a reconciler)
        self.on_flush = on_flush
        self.stats = WriterStats()
        #: what the receipts applied as they arrived came to (engine.receipt_arrival)
        self.arrivals = Arrivals()
        self._queue: deque[_Waiting] = deque()
        self._rows = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start flushing."""
        self._closed = False
        self._task = asyncio.create_task(self._run(), name="receipt-writer")

    async def stop(self) -> None:
        """Accept no more writes, flush everything pending, then return."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def write(self, account: str, events: WebhookEvents) -> None:
        """Store ``events`` for ``account``; return once they are committed.

        Raises WriterStopped when the writer is not running, Unstorable (before queueing)
        for events PostgreSQL cannot hold, or the batch's error.
        """
        if self._closed or self._task is None or self._task.done():
            raise WriterStopped("the receipt writer is not running")
        if not (events.receipts or events.inbound or events.opt_changes):
            return
        # rows are built here, in the caller's turn: bad data fails its own call only
        receipts, inbound = ReceiptRows(self.redact), InboundRows(self.keywords, self.redact)
        for receipt in events.receipts:
            receipts.add(account, receipt)
        inbound.add(account, events)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(account, receipts, inbound, loop.create_future(), loop.time())
        self._queue.append(waiting)
        self._rows += waiting.rows
        if len(self._queue) == 1 or self._rows >= self.max_rows:
            self._wake.set()
        await waiting.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._queue:
                if self._closed:
                    return
                await self._wake.wait()
                continue
            delay = self._queue[0].since + self.flush_interval - loop.time()
            if delay > 0 and self._rows < self.max_rows and not self._closed:
                with suppress(TimeoutError):  # the window closed: flush
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            await self._flush(self._take())

    def _take(self) -> list[_Waiting]:
        taken: list[_Waiting] = []
        rows = 0
        while self._queue and (not taken or rows + self._queue[0].rows <= self.max_rows):
            item = self._queue.popleft()
            taken.append(item)
            rows += item.rows
        self._rows -= rows
        return taken

    async def _flush(self, batch: list[_Waiting]) -> None:
        try:
            new = await self._store(batch)
        except asyncio.CancelledError:
            _fail(batch, WriterStopped("the receipt writer was cancelled"))
            raise
        except Exception as exc:  # handed to every waiter, never swallowed
            if len(batch) > 1 and not isinstance(exc, _UNAVAILABLE):
                # one request's data may have broken the batch: store the others one by
                # one, so only the culprit's caller gets the error
                log.warning(
                    "receipt batch refused (%s): retrying its %d requests one by one",
                    exc,
                    len(batch),
                )
                for item in batch:
                    await self._flush([item])
                return
            self._failed(batch, exc)
            return
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)
        if self.on_flush is not None and new:
            try:
                self.on_flush(new)
            except Exception:  # a metrics or wake-up hook must not stop the writer
                log.exception("the writer's on_flush hook failed")

    def _failed(self, batch: list[_Waiting], exc: BaseException) -> None:
        self.stats.failed_flushes += 1
        log.error(
            "storing %d webhook calls failed: %r",
            len(batch),
            exc,
            extra={"account": batch[0].account},
        )
        _fail(batch, exc)

    async def _store(self, batch: list[_Waiting]) -> int:
        """Insert one batch (one transaction); the number of new receipts."""
        receipts, inbound = ReceiptRows(), InboundRows(self.keywords)
        per_account: Counter[str] = Counter()
        for item in batch:
            receipts.extend(item.receipts)
            inbound.extend(item.inbound)
            per_account[item.account] += len(item.receipts)
        async with self.pool.acquire() as conn:
            if len(inbound):
                async with conn.transaction():
                    new = await store_and_apply(conn, receipts, "webhook", self.arrivals)
                    opt = await conn.fetchrow(QUERIES["insert_inbound"], *inbound.columns)
                self._opted(opt)
            else:
                new = await store_and_apply(conn, receipts, "webhook", self.arrivals)
        self.stats.flushes += 1
        self.stats.receipts.update(per_account)
        self.stats.duplicates += len(receipts) - new
        return new

    def _opted(self, counts: asyncpg.Record) -> None:
        self.stats.inbound += counts["stored"]
        self.stats.suppressed += counts["suppressed"]
        self.stats.lifted += counts["lifted"]
        if counts["suppressed"] or counts["lifted"]:
            log.info(
                "opt-outs: %d numbers suppressed, %d lifted", counts["suppressed"], counts["lifted"]
            )


def _fail(batch: Iterable[_Waiting], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
