"""Send results recorded: one claimed batch's results written in groups as its requests
finish, one ``UPDATE ... FROM unnest(...)`` per group (``record_results``).

``accepted`` → ``sent``; ``rejected`` → ``failed``; ``account`` → ``queued`` again without
spending an attempt; ``retry`` → ``queued`` again after exponential backoff with jitter (or
the provider's ``retry_after``), ``failed`` once ``max_attempts`` is reached; ``unknown`` →
``unknown``. A message held for its recipient's quiet hours goes back to ``queued`` until
they end, without spending an attempt. On a stop, a request cancelled before it started
goes back to ``queued`` and one cancelled in flight becomes ``unknown``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.providers.base import Outcome, SendResult
from engine.queries import QUERIES
from engine.redact import Redactor
from engine.status import MessageStatus
from engine.timing import utcnow

#: send results are written in groups of at most this many, or this many seconds old.
#: 20 ms, not 200: a provider that posts its 'sent' receipt as it answers (the simulator
#: does) otherwise beats the record to the database for about half the messages of a
#: single-send account, and each such receipt costs the reconciler a second write
#: (bench/RESULTS.md, "Issue 20, third part"); a group of a few rows is still one UPDATE.
FLUSH_ROWS = 500
FLUSH_AFTER = 0.02
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0

#: a message held for its recipient's quiet hours, and when they end
Held = tuple[asyncpg.Record, datetime]


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before retry number ``attempts``: exponential, capped, with jitter."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempts - 1, 0))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class Chunk:
    """One request's worth of claimed messages and how far it got."""

    rows: list[asyncpg.Record]
    #: the account the request goes to (a route's lane sends to several)
    account: str | None = None
    started: bool = False
    results: list[SendResult] | None = None
    recorded: bool = False


@dataclass(slots=True)
class Recorder:
    """Writes send results for one dispatcher (its worker name on every row)."""

    pool: asyncpg.Pool
    worker: str
    max_attempts: int
    rng: random.Random
    #: a provider's error text may echo what we sent it (a callback URL with its secret)
    redact: Redactor

    async def record(
        self, chunks: Sequence[Chunk], held: Sequence[Held], cancelled: bool
    ) -> list[bool]:
        """Write these chunks' results and the held messages in one UPDATE; return which
        results were rejections."""
        batch = _Batch(self.max_attempts, self.rng, utcnow(), self.redact)
        for chunk in chunks:
            for row, result in zip(chunk.rows, _results_of(chunk, cancelled), strict=True):
                batch.add(row, result)
        for row, until in held:
            batch.hold(row, until)
        if batch.ids:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    QUERIES["record_results"],
                    *batch.columns(),
                    self.worker,
                    batch.handed_column(),
                )
        return batch.rejected


class Results:
    """A claimed batch's send results, recorded in groups as its requests finish.

    Waiting for the whole batch would leave its first messages ``sending`` for as long as
    the batch takes (seconds, on a fast account), so their delivery receipts would arrive
    before the send is recorded and have to be looked at again. A group is written once it
    holds ``FLUSH_ROWS`` results or its oldest result is ``FLUSH_AFTER`` seconds old: still
    one UPDATE per group, never one per message.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.pending: list[Chunk] = []
        self.rows = 0
        self.oldest = 0.0
        self.writing: set[asyncio.Task[list[bool]]] = set()
        #: rejections in the order they were recorded (the failure brake's input)
        self.rejected: list[bool] = []

    async def done(self, chunk: Chunk) -> None:
        """One request finished: write its group if the group is due."""
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append(chunk)
        self.rows += len(chunk.rows)
        if self.rows >= FLUSH_ROWS or time.monotonic() - self.oldest >= FLUSH_AFTER:
            taken, self.pending, self.rows = self.pending, [], 0
            await self._write(taken, (), cancelled=False)

    async def settle(
        self, chunks: Sequence[Chunk], waiting: Sequence[Held], cancelled: bool
    ) -> None:
        """Write everything not written yet: the last group, messages held for quiet hours,
        and on cancellation the chunks that never got an answer. A group being written when
        the batch was cancelled is waited for first."""
        if self.writing:
            await asyncio.gather(*self.writing, return_exceptions=True)
        rest = [chunk for chunk in chunks if not chunk.recorded]
        self.pending, self.rows = [], 0
        if rest or waiting:
            await self._write(rest, waiting, cancelled)

    async def _write(self, chunks: list[Chunk], waiting: Sequence[Held], cancelled: bool) -> None:
        for chunk in chunks:
            chunk.recorded = True
        # shielded: a stop while the UPDATE is on its way must not leave it half-known
        task = asyncio.ensure_future(self.recorder.record(chunks, waiting, cancelled))
        self.writing.add(task)
        task.add_done_callback(self.writing.discard)
        self.rejected.extend(await asyncio.shield(task))


_NOT_STARTED = SendResult.retry("not_started", "the daemon stopped before sending it")
_IN_FLIGHT = SendResult.unknown("shutdown", "the daemon stopped while the request was in flight")
#: the result of a request not sent because its account went down meanwhile
ACCOUNT_DOWN = SendResult.retry("account_down", "the account was paused before this was sent")


def _results_of(chunk: Chunk, cancelled: bool) -> list[SendResult]:
    if chunk.results is not None:
        return chunk.results
    assert cancelled, "a chunk without results outside cancellation"
    return [_IN_FLIGHT if chunk.started else _NOT_STARTED] * len(chunk.rows)


@dataclass(slots=True)
class _Batch:
    """The columns of one ``record_results`` statement, and which results were rejections
    (the failure brake's input)."""

    max_attempts: int
    rng: random.Random
    now: datetime
    #: a provider's error text may echo what we sent it (a callback URL with its secret)
    redact: Redactor = field(default_factory=Redactor)
    ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    provider_ids: list[str | None] = field(default_factory=list)
    codes: list[str | None] = field(default_factory=list)
    details: list[str | None] = field(default_factory=list)
    next_at: list[datetime | None] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)
    rejected: list[bool] = field(default_factory=list)
    handed: list[bool] = field(default_factory=list)

    def add(self, row: asyncpg.Record, result: SendResult) -> None:
        """One send result."""
        # handed to the provider (messages.tried_accounts): not when it never left
        self.handed.append(result is not _NOT_STARTED and result is not ACCOUNT_DOWN)
        if result.outcome is Outcome.RETRY:
            self._retry(row, result)
            return
        if result.outcome is Outcome.ACCOUNT:  # not the message's fault: no attempt spent
            self._row(
                row["id"],
                MessageStatus.QUEUED,
                None,
                result.error_code,
                result.error_detail,
                self.now,
                1,
            )
            return
        status = {
            Outcome.ACCEPTED: MessageStatus.SENT,
            Outcome.REJECTED: MessageStatus.FAILED,
            Outcome.UNKNOWN: MessageStatus.UNKNOWN,
        }[result.outcome]
        self._row(
            row["id"],
            status,
            result.provider_message_id,
            result.error_code,
            result.error_detail,
            None,
            0,
        )
        self.rejected.append(result.outcome is Outcome.REJECTED)

    def _retry(self, row: asyncpg.Record, result: SendResult) -> None:
        if result is _NOT_STARTED or result is ACCOUNT_DOWN:  # never handed over: no attempt
            self._row(row["id"], MessageStatus.QUEUED, None, None, None, self.now, 1)
            return
        if row["attempts"] >= self.max_attempts:
            detail = f"{result.error_code}: {result.error_detail or ''}".strip(": ")
            self._row(
                row["id"],
                MessageStatus.FAILED,
                None,
                "retries_exhausted",
                f"{row['attempts']} attempts, last {detail}",
                None,
                0,
            )
            return
        delay = result.retry_after or backoff(row["attempts"], self.rng)
        self._row(
            row["id"],
            MessageStatus.QUEUED,
            None,
            result.error_code,
            result.error_detail,
            self.now + timedelta(seconds=delay),
            0,
        )

    def hold(self, row: asyncpg.Record, until: datetime) -> None:
        """Back to the queue until the recipient's quiet hours end."""
        self.handed.append(False)
        self._row(row["id"], MessageStatus.QUEUED, None, "quiet_hours", None, until, 1)

    def _row(
        self,
        message_id: int,
        status: MessageStatus,
        provider_id: str | None,
        code: str | None,
        detail: str | None,
        next_at: datetime | None,
        refund: int,
    ) -> None:
        self.ids.append(message_id)
        self.statuses.append(status.value)
        self.provider_ids.append(provider_id)
        self.codes.append(code)
        self.details.append(detail and self.redact.text(detail))
        self.next_at.append(next_at)
        self.refunds.append(refund)

    def columns(self) -> tuple[list[Any], ...]:
        """The arrays, in the statement's parameter order."""
        return (
            self.ids,
            self.statuses,
            self.provider_ids,
            self.codes,
            self.details,
            self.next_at,
            self.refunds,
        )

    def handed_column(self) -> list[bool]:
        """Which rows were handed to a provider (``record_results`` ``$9``)."""
        return self.handed
