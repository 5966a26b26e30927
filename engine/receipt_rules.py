"""Receipt rules: what a provider's receipt does to a message's status (no I/O).

Status only moves forward (sent → delivered → read; undelivered and failed are final); a
final receipt settles ``unknown`` or ``expired``; a long message's per-part receipts fold
into one whole-message receipt. Every receipt ends with a :class:`ReceiptOutcome`, the
value stored in ``receipts.outcome``. The reconciler (:mod:`engine.reconciler`) reads
receipts and writes changes; the decisions are all here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from engine.status import MessageStatus


class ReceiptOutcome(StrEnum):
    """What became of one stored receipt (``receipts.outcome``, a text column: a test
    holds the values the database stores to these)."""

    #: the message moved to the receipt's status
    APPLIED = "applied"
    #: the message has that status already
    DUPLICATE = "duplicate"
    #: behind the message's status, or contradicting a final one
    STALE = "stale"
    #: one part of a long message, whose other parts are not all in yet
    PARTIAL = "partial"
    #: a message no receipt may touch (cancelled, or skipped at expansion)
    IGNORED = "ignored"
    #: the provider's status is one we do not know: kept, nothing changed
    UNKNOWN_STATUS = "unknown_status"
    #: matched no message within ``give_up_after``: kept, no longer looked at
    UNMATCHED = "unmatched"
    #: an event the adapter could not read, stored already settled
    REJECTED = "rejected"
    #: pending: its message's send result is not recorded yet
    WAITING_FOR_SEND = "waiting_for_send"
    #: pending: no message matches it yet
    NOT_FOUND = "not_found"


S = MessageStatus
#: how far along each receipt status is; of two receipts for one message in a batch the
#: one further along is applied last, so it wins
RANK: Mapping[str, int] = {S.SENT: 1, S.DELIVERED: 2, S.UNDELIVERED: 2, S.FAILED: 2, S.READ: 3}
#: message statuses whose send result is not recorded yet: their receipts wait
NOT_SENT = frozenset({S.QUEUED.value, S.SENDING.value})
#: message statuses a receipt may say something about
REPORTABLE = frozenset({S.SENT, S.UNKNOWN, S.EXPIRED, S.DELIVERED, S.READ, S.UNDELIVERED, S.FAILED})
FAILURES = frozenset({S.UNDELIVERED.value, S.FAILED.value})


def step(current: str, new: str) -> ReceiptOutcome:
    """What a receipt saying ``new`` does to a message in ``current``.

    ``applied`` (the message moves), ``duplicate`` (it says that already) or ``stale``
    (behind, or contradicting a final status); ``ignored`` for a message no receipt may
    touch (cancelled, or skipped at expansion). Status only moves forward: sent →
    delivered → read; undelivered and failed are final; a final receipt settles unknown
    or expired, and a ``sent`` one tells an unknown message was accepted.
    """
    if current not in REPORTABLE:
        return ReceiptOutcome.IGNORED
    if new == current:
        return ReceiptOutcome.DUPLICATE
    if current in (S.SENT, S.UNKNOWN):
        return ReceiptOutcome.APPLIED
    if current == S.EXPIRED:
        return ReceiptOutcome.STALE if new == S.SENT else ReceiptOutcome.APPLIED
    if current == S.DELIVERED and new == S.READ:
        return ReceiptOutcome.APPLIED
    return ReceiptOutcome.STALE


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


def fold(
    message_id: int, current: str, receipts: Sequence[Seen], provider_id: str | None = None
) -> tuple[Change | None, dict[int, ReceiptOutcome]]:
    """Apply one message's receipts in rank order; the change (None if none) and each
    receipt's outcome."""
    change = Change(message_id, current, current)
    outcomes: dict[int, ReceiptOutcome] = {}
    for receipt in sorted(receipts, key=lambda r: (RANK[r.status], r.id)):
        outcomes[receipt.id] = outcome = step(change.status, receipt.status)
        if outcome is ReceiptOutcome.APPLIED:
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
