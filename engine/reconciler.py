"""The reconciler: pending receipts applied to ``messages``, in batches.

Most receipts are applied as they arrive (:mod:`engine.receipt_arrival`, which decides with
this module's :class:`Batch`); the reconciler takes those that had to wait. One
``UPDATE ... FROM unnest(...)`` per batch, by the rules of :mod:`engine.receipt_rules`.
A receipt that cannot be applied yet (its message is not sent, or not found) stays pending
and is looked at again; after ``give_up_after`` it is settled as ``unmatched``. Every
receipt keeps its outcome (:class:`~engine.receipt_rules.ReceiptOutcome`): applied,
duplicate, stale, partial, ignored, unknown_status, unmatched (while pending:
waiting_for_send, not_found); an event the adapter could not read (``Receipt.rejected``)
is stored already settled as ``rejected``. A receipt the adapter flags ``opt_out``
suppresses its message's number on the message's channel when it is settled (in the same
batched statement), so a provider's opt-out failure needs nothing the adapter remembers.
Safe to run in several daemons at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.queries import QUERIES
from engine.receipt_rules import (
    FAILURES,
    NOT_SENT,
    RANK,
    Change,
    ReceiptOutcome,
    Seen,
    fold,
    parts_status,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """One batch of receipts, decided: due ones here, arriving ones in
    :mod:`engine.receipt_arrival` (rows: a receipt with its message, as ``due_receipts``
    returns them)."""

    rows: Sequence[Mapping[str, Any]]
    settle: dict[int, tuple[ReceiptOutcome | None, int | None, str]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    receipts_of: dict[int, list[int]] = field(default_factory=dict)
    matched: dict[int, list[Mapping[str, Any]]] = field(default_factory=dict)

    def triage(self) -> None:
        """Set aside what cannot reach the fold; group the rest by message."""
        for row in self.rows:
            mid, status = row["message_id"], row["status"]
            if status is None:
                self.settle[row["id"]] = (ReceiptOutcome.UNKNOWN_STATUS, mid, "settle")
            elif mid is None:
                self.settle[row["id"]] = (ReceiptOutcome.NOT_FOUND, None, "missing")
            elif row["message_status"] in NOT_SENT:
                self.settle[row["id"]] = (ReceiptOutcome.WAITING_FOR_SEND, mid, "wait")
            elif status not in RANK:
                self.settle[row["id"]] = (ReceiptOutcome.IGNORED, mid, "settle")
            else:
                self.matched.setdefault(mid, []).append(row)

    @property
    def part_messages(self) -> list[int]:
        """Messages with per-part receipts in this batch."""
        return sorted(
            mid for mid, rows in self.matched.items() if any(r["part"] is not None for r in rows)
        )

    def decide(self, earlier_parts: Mapping[int, Sequence[Mapping[str, Any]]]) -> None:
        """Fold each message's receipts into its change."""
        for mid, rows in self.matched.items():
            first = rows[0]
            seen = [_seen(r) for r in rows if r["part"] is None]
            parts = [r for r in rows if r["part"] is not None]
            if parts:
                seen.append(
                    _parts_receipt(parts, earlier_parts.get(mid, []), first["segments"] or 1)
                )
            change, outcomes = fold(
                mid, first["message_status"], seen, first["message_provider_id"]
            )
            whole = outcomes.pop(-1, None)  # the parts' combined receipt
            for row in parts:
                outcomes[row["id"]] = (
                    ReceiptOutcome.APPLIED
                    if whole is ReceiptOutcome.APPLIED
                    else ReceiptOutcome.PARTIAL
                )
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
        """The arrays of ``apply_receipts``, in message id order: its UPDATE locks the rows
        in that order (a nested loop over the arrays), the order every writer and
        reconciler locks messages in, so that two of them queue up rather than deadlock."""
        names = (
            "id",
            "expected",
            "status",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "code",
            "detail",
            "provider_id",
        )
        changes = sorted(self.changes, key=lambda change: change.id)
        return tuple([getattr(c, name) for c in changes] for name in names)

    def settle_columns(self) -> tuple[list[Any], ...]:
        """The arrays of ``settle_receipts``."""
        ids = list(self.settle)
        return (ids, *([self.settle[i][n] for i in ids] for n in range(3)))


def _seen(row: Mapping[str, Any]) -> Seen:
    return Seen(
        row["id"],
        row["status"],
        row["at"],
        row["error_code"],
        row["error_detail"],
        row["provider_message_id"],
        row["part"],
    )


def _parts_receipt(
    rows: Sequence[Mapping[str, Any]], earlier: Sequence[Mapping[str, Any]], segments: int
) -> Seen:
    """The batch's part receipts, with those recorded before, as one whole-message receipt
    (id -1)."""
    status = parts_status([(r["part"], r["status"]) for r in (*earlier, *rows)], segments)
    failing = [r for r in (*rows, *earlier) if r["status"] in FAILURES]
    source = failing[0] if failing else rows[-1]
    return Seen(
        -1,
        status,
        max(r["at"] for r in rows),
        source["error_code"],
        source["error_detail"],
        rows[0]["provider_message_id"],
    )


class Reconciler:
    """Applies stored receipts to messages (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch: int = 5000,
        give_up_after: timedelta = timedelta(days=7),
        retry_after: timedelta = timedelta(seconds=1),
        max_retry_after: timedelta = timedelta(minutes=10),
    ) -> None:
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
                log.warning(
                    "receipts matched no message for %s: %s settled as unmatched",
                    self.give_up_after,
                    gave_up.split()[-1],
                )
            started = await conn.fetchval(QUERIES["db_now"])
            settled = 0
            while True:
                done, seen = await self._apply_batch(conn, started)
                settled += done
                if seen < self.batch:
                    return settled

    async def _apply_batch(self, conn: asyncpg.Connection, started: datetime) -> tuple[int, int]:
        async with conn.transaction():
            batch = Batch(await conn.fetch(QUERIES["due_receipts"], started, self.batch))
            if not batch.rows:
                return 0, 0
            batch.triage()
            earlier = await self._earlier_parts(conn, batch.part_messages)
            batch.decide(earlier)
            if batch.changes:
                await conn.execute(QUERIES["lock_messages"], [c.id for c in batch.changes])
                updated = await conn.fetch(QUERIES["apply_receipts"], *batch.change_columns())
                batch.lost({row["id"] for row in updated})
            suppressed = await conn.fetchval(
                QUERIES["settle_receipts"],
                *batch.settle_columns(),
                self.retry_after,
                self.max_retry_after,
            )
        if suppressed:
            log.info("opt-out receipts: %d numbers suppressed", suppressed)
        return self._count(batch), len(batch.rows)

    async def _earlier_parts(
        self, conn: asyncpg.Connection, messages: list[int]
    ) -> dict[int, list[asyncpg.Record]]:
        if not messages:
            return {}
        await conn.execute(QUERIES["lock_messages"], messages)
        found: dict[int, list[asyncpg.Record]] = {}
        for row in await conn.fetch(QUERIES["applied_parts"], messages):
            found.setdefault(row["message_id"], []).append(row)
        return found

    def _count(self, batch: Batch) -> int:
        accounts = {row["id"]: row["account"] for row in batch.rows}
        settled = 0
        unknown: Counter[str] = Counter()
        for receipt_id, (outcome, _, mode) in batch.settle.items():
            if mode == "settle":
                settled += 1
                self.outcomes[accounts[receipt_id], outcome or ""] += 1
                if outcome is ReceiptOutcome.UNKNOWN_STATUS:
                    unknown[accounts[receipt_id]] += 1
        for account, count in unknown.items():
            log.warning(
                "%d receipts with a status we do not know: kept, nothing changed",
                count,
                extra={"account": account},
            )
        return settled
