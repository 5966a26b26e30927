"""Receipts: from a provider's word to one correct, final status per recipient.

Four parts, each safe to run in several daemons at once:

* :class:`ReceiptWriter` stores what webhooks said, durably, before they are answered.
  Calls are group-committed: every ``write`` waiting within ``flush_interval`` (or until
  ``max_rows``) shares one batched INSERT, and each caller returns once the batch is
  committed (or raises the batch's error). Receipts go to the ``receipts`` log (a
  provider event seen before is skipped); replies and opt-in/out notices go to
  ``inbound_messages`` and act on ``suppressions``.
* :class:`Reconciler` applies stored receipts to ``messages`` in batches, with one
  ``UPDATE ... FROM unnest(...)`` per batch, by the rules of :func:`step`. A receipt
  that cannot be applied yet (its message is not sent, or not found) stays pending and
  is looked at again; after ``give_up_after`` it is settled as ``unmatched``. Every
  receipt keeps its ``outcome``: applied, duplicate, stale, partial, ignored,
  unknown_status, unmatched (while pending: waiting_for_send, not_found); an event the
  adapter could not read (``Receipt.rejected``) is stored already settled as ``rejected``.
  A receipt the adapter flags ``opt_out`` suppresses its message's number on the
  message's channel when it is settled (in the same batched statement), so a provider's
  opt-out failure needs nothing the adapter remembers.
* :class:`Poller` asks providers that can be asked (``supports_polling``) about sent
  messages: all of them where the provider has no delivery webhook, else only those
  whose receipt is overdue. Answers go into the same log, for the reconciler.
* :func:`complete_runs` closes runs that have nothing left to learn.

Opt-out keywords live here and only here (:class:`Keywords`): the writer reads every
reply's text, and an adapter's own STOP/START guess for the same reply is ignored. A
provider's opt-out notice with no reply (Zingle's block/unblock webhook) is taken as is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.errors import EngineError
from engine.phones import international, mask
from engine.providers.base import (
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    Adapter,
    Inbound,
    OptChange,
    Receipt,
    WebhookEvents,
)
from engine.queries import QUERIES
from engine.redact import Redactor
from engine.status import MessageStatus

log = logging.getLogger(__name__)

HELP_WORDS = frozenset({"HELP", "INFO"})
_BIGINT = 2**63
_SMALLINT = 2**15
#: the longest provider id stored: ids are indexed, and a btree entry holds ~2.7 kB at most
MAX_ID = 500


class WriterStopped(EngineError):
    """The receipt writer is not running: the caller should answer "try again later"."""


class Unstorable(EngineError):
    """Events PostgreSQL cannot hold (a payload nested too deep, an id too long to index):
    the caller's request is refused, no one else's batch fails with it."""


# --- opt-out keywords ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keywords:
    """Whole-message reply keywords (case-insensitive; surrounding spaces and a trailing
    ``.`` or ``!`` are ignored)."""

    opt_out: frozenset[str] = OPT_OUT_WORDS
    opt_in: frozenset[str] = OPT_IN_WORDS
    help: frozenset[str] = HELP_WORDS

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]) -> Keywords:
        """Keywords from any spelling."""
        return cls(*(frozenset(w.strip().upper() for w in words)
                     for words in (opt_out, opt_in, help)))

    def action(self, text: str) -> str | None:
        """``opt_out``, ``opt_in``, ``help``, or None for any other text."""
        word = text.strip().rstrip(".!").strip().upper()
        if word in self.opt_out:
            return "opt_out"
        if word in self.opt_in:
            return "opt_in"
        return "help" if word in self.help else None


# --- rows for the batched INSERTs ------------------------------------------------------


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one in a payload must not fail a whole batch."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _id(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_ID:
        raise Unstorable(f"an id of {len(value)} characters (at most {MAX_ID})")
    return _text(value)


def _json(raw: Mapping[str, Any], redact: Redactor) -> str:
    """A payload as JSON text jsonb accepts, secrets masked; raise Unstorable."""
    try:
        return redact.json(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Unstorable(f"payload cannot be stored as JSON: {exc}") from None


def _detail(value: str | None, redact: Redactor) -> str | None:
    return None if value is None else _text(redact.text(value))


def _in_range(value: int | None, limit: int) -> int | None:
    return value if value is not None and 0 <= value < limit else None


def _aware(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


@dataclass(slots=True)
class ReceiptRows:
    """The columns of one ``insert_receipts`` statement."""

    redact: Redactor = field(default_factory=Redactor)
    columns: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(13)))

    def __len__(self) -> int:
        return len(self.columns[0])

    def add(self, account: str, receipt: Receipt) -> None:
        """One receipt, secrets masked; values PostgreSQL would refuse are made harmless,
        or raise Unstorable (before anything is added) where they cannot be."""
        values = (
            account, _id(receipt.provider_message_id), _in_range(receipt.message_id, _BIGINT),
            _id(receipt.event_id), receipt.status.value if receipt.status else None,
            _text(receipt.provider_status), _text(receipt.error_code),
            _detail(receipt.error_detail, self.redact), _in_range(receipt.part, _SMALLINT),
            _aware(receipt.occurred_at), _json(receipt.raw, self.redact), receipt.opt_out,
            receipt.rejected is not None,
        )
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)

    def extend(self, other: ReceiptRows) -> None:
        """Append another statement's rows."""
        for column, more in zip(self.columns, other.columns, strict=True):
            column.extend(more)


@dataclass(slots=True)
class InboundRows:
    """The columns of one ``insert_inbound`` statement."""

    keywords: Keywords
    redact: Redactor = field(default_factory=Redactor)
    columns: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(8)))

    def __len__(self) -> int:
        return len(self.columns[0])

    def extend(self, other: InboundRows) -> None:
        """Append another statement's rows."""
        for column, more in zip(self.columns, other.columns, strict=True):
            column.extend(more)

    def add(self, account: str, events: WebhookEvents) -> None:
        """Replies (their keyword decides any opt change) and opt notices without a reply."""
        replies = {reply.from_ for reply in events.inbound}
        channels = {c.phone: c.channel for c in events.opt_changes if c.phone in replies}
        for reply in events.inbound:
            self._reply(account, reply, channels.get(reply.from_, "sms"))
        for change in events.opt_changes:
            if change.phone not in replies:  # a notice of its own (Zingle block/unblock)
                self._notice(account, change)

    def _reply(self, account: str, reply: Inbound, channel: str) -> None:
        action, phone = self.keywords.action(reply.text), reply.from_
        if action == "help":
            log.info("HELP from %s", mask(phone), extra={"account": account})
        elif action is not None:
            number = _e164(phone, account)
            action, phone = (action, number) if number else (None, phone)
        self._row(account, phone, channel, reply.text, reply.provider_message_id,
                  reply.in_reply_to, action, reply.raw)

    def _notice(self, account: str, change: OptChange) -> None:
        phone = _e164(change.phone, account)
        if phone is None:
            return
        action = "opt_out" if change.opted_out else "opt_in"
        self._row(account, phone, change.channel, None, None, None, action, change.raw)

    def _row(self, account: str, phone: str, channel: str, body: str | None,
             provider_id: str | None, in_reply_to: str | None, action: str | None,
             raw: Mapping[str, Any]) -> None:
        values = (account, _id(phone), _text(channel), _text(body), _id(provider_id),
                  _id(in_reply_to), action, _json(raw, self.redact))
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)


def _e164(phone: str, account: str) -> str | None:
    number = international(phone)
    if number is None:
        log.warning("opt change for %s ignored: not an international number", mask(phone),
                    extra={"account": account})
    return number


async def store_receipts(conn: asyncpg.Connection, rows: ReceiptRows, source: str) -> int:
    """Insert receipts; return how many were new (not seen before by event id)."""
    if not rows:
        return 0
    return int(await conn.fetchval(QUERIES["insert_receipts"], *rows.columns, source))


# --- the writer -------------------------------------------------------------------------


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

    def __init__(self, pool: asyncpg.Pool, *, flush_interval: float = 0.005,
                 max_rows: int = 1000, opt_out_keywords: Iterable[str] = OPT_OUT_WORDS,
                 opt_in_keywords: Iterable[str] = OPT_IN_WORDS,
                 help_keywords: Iterable[str] = HELP_WORDS,
                 on_flush: Callable[[int], None] | None = None,
                 redact: Redactor | None = None) -> None:
        self.pool = pool
        #: masks the accounts' secrets in every payload stored
        self.redact = redact or Redactor()
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self.keywords = Keywords.of(opt_out_keywords, opt_in_keywords, help_keywords)
        #: called with the number of new receipts after each flush (to wake a reconciler)
        self.on_flush = on_flush
        self.stats = WriterStats()
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
                log.warning("receipt batch refused (%s): retrying its %d requests one by one",
                            exc, len(batch))
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
        log.error("storing %d webhook calls failed: %r", len(batch), exc,
                  extra={"account": batch[0].account})
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
                    new = await store_receipts(conn, receipts, "webhook")
                    opt = await conn.fetchrow(QUERIES["insert_inbound"], *inbound.columns)
                self._opted(opt)
            else:
                new = await store_receipts(conn, receipts, "webhook")
        self.stats.flushes += 1
        self.stats.receipts.update(per_account)
        self.stats.duplicates += len(receipts) - new
        return new

    def _opted(self, counts: asyncpg.Record) -> None:
        self.stats.inbound += counts["stored"]
        self.stats.suppressed += counts["suppressed"]
        self.stats.lifted += counts["lifted"]
        if counts["suppressed"] or counts["lifted"]:
            log.info("opt-outs: %d numbers suppressed, %d lifted", counts["suppressed"],
                     counts["lifted"])


def _fail(batch: Iterable[_Waiting], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


# --- applying receipts: the rules ---------------------------------------------------------

S = MessageStatus
#: how far along each receipt status is; of two receipts for one message in a batch the
#: one further along is applied last, so it wins
RANK: Mapping[str, int] = {S.SENT: 1, S.DELIVERED: 2, S.UNDELIVERED: 2, S.FAILED: 2, S.READ: 3}
#: message statuses whose send result is not recorded yet: their receipts wait
NOT_SENT = frozenset({S.QUEUED.value, S.SENDING.value})
#: message statuses a receipt may say something about
REPORTABLE = frozenset({S.SENT, S.UNKNOWN, S.EXPIRED, S.DELIVERED, S.READ, S.UNDELIVERED,
                        S.FAILED})
FAILURES = frozenset({S.UNDELIVERED.value, S.FAILED.value})


def step(current: str, new: str) -> str:
    """What a receipt saying ``new`` does to a message in ``current``.

    ``applied`` (the message moves), ``duplicate`` (it says that already) or ``stale``
    (behind, or contradicting a final status); ``ignored`` for a message no receipt may
    touch (cancelled, or skipped at expansion). Status only moves forward: sent →
    delivered → read; undelivered and failed are final; a final receipt settles unknown
    or expired, and a ``sent`` one tells an unknown message was accepted.
    """
    if current not in REPORTABLE:
        return "ignored"
    if new == current:
        return "duplicate"
    if current in (S.SENT, S.UNKNOWN):
        return "applied"
    if current == S.EXPIRED:
        return "stale" if new == S.SENT else "applied"
    if current == S.DELIVERED and new == S.READ:
        return "applied"
    return "stale"


@dataclass(frozen=True, slots=True)
class Seen:
    """One receipt as the reconciler reads it."""

    id: int
    status: str
    at: datetime
    code: str | None = None
    detail: str | None = None
    provider_id: str | None = None
    part: int | None = None


@dataclass(slots=True)
class Change:
    """A message's new status and times, decided from its receipts in one batch."""

    id: int
    expected: str
    status: str
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failed_at: datetime | None = None
    code: str | None = None
    detail: str | None = None
    provider_id: str | None = None

    def apply(self, receipt: Seen) -> None:
        """Move to the receipt's status, recording its time (and failure)."""
        if self.expected in (S.UNKNOWN, S.EXPIRED) and self.sent_at is None:
            self.sent_at = receipt.at
        self.status = receipt.status
        if receipt.status == S.DELIVERED:
            self.delivered_at = receipt.at
        elif receipt.status == S.READ:
            self.read_at = receipt.at
            self.delivered_at = self.delivered_at or receipt.at
        elif receipt.status in FAILURES:
            self.failed_at, self.code, self.detail = receipt.at, receipt.code, receipt.detail


def fold(message_id: int, current: str, receipts: Sequence[Seen],
         provider_id: str | None = None) -> tuple[Change | None, dict[int, str]]:
    """Apply one message's receipts in rank order; the change (None if none) and each
    receipt's outcome."""
    change = Change(message_id, current, current)
    outcomes: dict[int, str] = {}
    for receipt in sorted(receipts, key=lambda r: (RANK[r.status], r.id)):
        outcomes[receipt.id] = outcome = step(change.status, receipt.status)
        if outcome == "applied":
            change.apply(receipt)
            change.provider_id = change.provider_id or receipt.provider_id
    if change.status == current:
        return None, outcomes
    if provider_id is not None:
        change.provider_id = None  # the message has its id already
    return change, outcomes


def parts_status(parts: Iterable[tuple[int, str]], segments: int) -> str:
    """A long message's status from its per-part receipts ``(part, status)``: undelivered
    if any part failed, delivered (read) once every part is, else sent."""
    seen = list(parts)
    if any(status in FAILURES for _, status in seen):
        return S.UNDELIVERED.value
    delivered = {part for part, status in seen if status in (S.DELIVERED, S.READ)}
    read = {part for part, status in seen if status == S.READ}
    if len(read) >= segments:
        return S.READ.value
    return S.DELIVERED.value if len(delivered) >= segments else S.SENT.value


# --- the reconciler ---------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    """One batch of due receipts, decided."""

    rows: list[asyncpg.Record]
    settle: dict[int, tuple[str | None, int | None, str]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    receipts_of: dict[int, list[int]] = field(default_factory=dict)
    matched: dict[int, list[asyncpg.Record]] = field(default_factory=dict)

    def triage(self) -> None:
        """Set aside what cannot reach the fold; group the rest by message."""
        for row in self.rows:
            mid, status = row["message_id"], row["status"]
            if status is None:
                self.settle[row["id"]] = ("unknown_status", mid, "settle")
            elif mid is None:
                self.settle[row["id"]] = ("not_found", None, "missing")
            elif row["message_status"] in NOT_SENT:
                self.settle[row["id"]] = ("waiting_for_send", mid, "wait")
            elif status not in RANK:
                self.settle[row["id"]] = ("ignored", mid, "settle")
            else:
                self.matched.setdefault(mid, []).append(row)

    @property
    def part_messages(self) -> list[int]:
        """Messages with per-part receipts in this batch."""
        return sorted(mid for mid, rows in self.matched.items()
                      if any(r["part"] is not None for r in rows))

    def decide(self, earlier_parts: Mapping[int, list[asyncpg.Record]]) -> None:
        """Fold each message's receipts into its change."""
        for mid, rows in self.matched.items():
            first = rows[0]
            seen = [_seen(r) for r in rows if r["part"] is None]
            parts = [r for r in rows if r["part"] is not None]
            if parts:
                seen.append(_parts_receipt(parts, earlier_parts.get(mid, []),
                                           first["segments"] or 1))
            change, outcomes = fold(mid, first["message_status"], seen,
                                    first["message_provider_id"])
            whole = outcomes.pop(-1, None)  # the parts' combined receipt
            for row in parts:
                outcomes[row["id"]] = "applied" if whole == "applied" else "partial"
            for receipt_id, outcome in outcomes.items():
                self.settle[receipt_id] = (outcome, mid, "settle")
            if change is not None:
                self.changes.append(change)
                self.receipts_of[mid] = list(outcomes)

    def lost(self, updated: Collection[int]) -> None:
        """Messages that moved meanwhile: their receipts are looked at again."""
        for change in self.changes:
            if change.id not in updated:
                for receipt_id in self.receipts_of[change.id]:
                    self.settle[receipt_id] = (None, change.id, "retry")

    def change_columns(self) -> tuple[list[Any], ...]:
        """The arrays of ``apply_receipts``."""
        names = ("id", "expected", "status", "sent_at", "delivered_at", "read_at",
                 "failed_at", "code", "detail", "provider_id")
        return tuple([getattr(c, name) for c in self.changes] for name in names)

    def settle_columns(self) -> tuple[list[Any], ...]:
        """The arrays of ``settle_receipts``."""
        ids = list(self.settle)
        return (ids, *([self.settle[i][n] for i in ids] for n in range(3)))


def _seen(row: asyncpg.Record) -> Seen:
    return Seen(row["id"], row["status"], row["at"], row["error_code"], row["error_detail"],
                row["provider_message_id"], row["part"])


def _parts_receipt(rows: Sequence[asyncpg.Record], earlier: Sequence[asyncpg.Record],
                   segments: int) -> Seen:
    """The batch's part receipts, with those recorded before, as one whole-message receipt
    (id -1)."""
    status = parts_status([(r["part"], r["status"]) for r in (*earlier, *rows)], segments)
    failing = [r for r in (*rows, *earlier) if r["status"] in FAILURES]
    source = failing[0] if failing else rows[-1]
    return Seen(-1, status, max(r["at"] for r in rows), source["error_code"],
                source["error_detail"], rows[0]["provider_message_id"])


class Reconciler:
    """Applies stored receipts to messages (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, *, batch: int = 5000,
                 give_up_after: timedelta = timedelta(days=7),
                 retry_after: timedelta = timedelta(seconds=1),
                 max_retry_after: timedelta = timedelta(minutes=10)) -> None:
        self.pool = pool
        self.batch = batch
        self.give_up_after = give_up_after
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        #: cumulative receipt outcomes by (account, outcome), for metrics
        self.outcomes: Counter[tuple[str, str]] = Counter()

    async def apply_pending(self) -> int:
        """Apply every due pending receipt; return how many were settled."""
        async with self.pool.acquire() as conn:
            gave_up = await conn.execute(QUERIES["give_up_receipts"], self.give_up_after)
            if gave_up != "UPDATE 0":
                log.warning("receipts matched no message for %s: %s settled as unmatched",
                            self.give_up_after, gave_up.split()[-1])
            started = await conn.fetchval(QUERIES["db_now"])
            settled = 0
            while True:
                done, seen = await self._apply_batch(conn, started)
                settled += done
                if seen < self.batch:
                    return settled

    async def _apply_batch(self, conn: asyncpg.Connection, started: datetime) -> tuple[int, int]:
        async with conn.transaction():
            batch = _Batch(await conn.fetch(QUERIES["due_receipts"], started, self.batch))
            if not batch.rows:
                return 0, 0
            batch.triage()
            earlier = await self._earlier_parts(conn, batch.part_messages)
            batch.decide(earlier)
            if batch.changes:
                await conn.execute(QUERIES["lock_messages"], [c.id for c in batch.changes])
                updated = await conn.fetch(QUERIES["apply_receipts"], *batch.change_columns())
                batch.lost({row["id"] for row in updated})
            suppressed = await conn.fetchval(QUERIES["settle_receipts"],
                                             *batch.settle_columns(), self.retry_after,
                                             self.max_retry_after)
        if suppressed:
            log.info("opt-out receipts: %d numbers suppressed", suppressed)
        return self._count(batch), len(batch.rows)

    async def _earlier_parts(self, conn: asyncpg.Connection,
                             messages: list[int]) -> dict[int, list[asyncpg.Record]]:
        if not messages:
            return {}
        await conn.execute(QUERIES["lock_messages"], messages)
        found: dict[int, list[asyncpg.Record]] = {}
        for row in await conn.fetch(QUERIES["applied_parts"], messages):
            found.setdefault(row["message_id"], []).append(row)
        return found

    def _count(self, batch: _Batch) -> int:
        accounts = {row["id"]: row["account"] for row in batch.rows}
        settled = 0
        unknown: Counter[str] = Counter()
        for receipt_id, (outcome, _, mode) in batch.settle.items():
            if mode == "settle":
                settled += 1
                self.outcomes[accounts[receipt_id], outcome or ""] += 1
                if outcome == "unknown_status":
                    unknown[accounts[receipt_id]] += 1
        for account, count in unknown.items():
            log.warning("%d receipts with a status we do not know: kept, nothing changed",
                        count, extra={"account": account})
        return settled


# --- polling ------------------------------------------------------------------------------


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

    def __init__(self, pool: asyncpg.Pool, adapters: Mapping[str, Adapter[Any]], *,
                 poll_after: timedelta = timedelta(minutes=10),
                 window: timedelta = timedelta(hours=72), batch: int = 100,
                 interval: timedelta = timedelta(minutes=1),
                 schedule: Sequence[timedelta] = (timedelta(minutes=4), timedelta(minutes=10),
                                                  timedelta(minutes=45)),
                 max_interval: timedelta = timedelta(hours=6),
                 webhookless: Collection[str] | None = None,
                 limit: Callable[[str, int], Awaitable[None]] | None = None) -> None:
        self.pool = pool
        self.adapters = {name: a for name, a in adapters.items() if a.supports_polling}
        self.poll_after = poll_after
        self.window = window
        self.batch = batch
        self.interval = interval
        self.schedule = list(schedule)
        self.max_interval = max_interval
        self.webhookless = frozenset(
            webhookless if webhookless is not None else
            (name for name, a in self.adapters.items()
             if not getattr(a, "delivery_webhooks", True)))
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
        results = await asyncio.gather(*(self._poll_account(n, started) for n in names),
                                       return_exceptions=True)
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
                claimed = await conn.fetch(QUERIES["claim_polls"], name, first, self.window,
                                           self.batch, self.max_interval, started,
                                           self.schedule)
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
            return await store_receipts(conn, rows, "poll")


# --- runs ---------------------------------------------------------------------------------


async def complete_runs(conn: asyncpg.Connection, receipt_window: timedelta) -> int:
    """Complete the sending runs with nothing left to learn; return how many."""
    rows = await conn.fetch(QUERIES["complete_runs"], receipt_window)
    for row in rows:
        log.info("run completed", extra={"run": row["id"]})
    return len(rows)
