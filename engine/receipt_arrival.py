"""Receipts applied as they arrive, each written once (issue 20).

The reconciler reads a stored receipt, decides, updates the message, and writes the
receipt a second time to settle it. Most receipts can be decided the moment they arrive,
so the writer (:mod:`engine.receipt_writer`) and the poller do it in the transaction that
stores them, by the same rules (:mod:`engine.receipt_rules`, through the reconciler's
:class:`~engine.reconciler.Batch`):

1. ``match_arrivals``: each receipt's message (the provider's id, else our echoed id)
   with its status, and whether the receipt's event is stored already (a retried webhook:
   skipped, as the INSERT would). The messages are read, not locked: most receipts change
   nothing (a ``sent`` receipt for a message already ``sent``), and a row lock would cost
   each of them a write. The exception is a message reported on per part, which is
   locked (in id order) before its earlier parts are read, once its send is recorded;
2. the batch decided; one ``apply_receipts`` for the messages that change, in id order
   (the order the reconciler locks in, so the two queue up rather than deadlock), each
   only while it is still in the status it was decided from;
3. ``insert_decided_receipts``: every receipt inserted once, settled with its outcome, or
   pending for the reconciler when it cannot be applied yet (its message is not sent, or
   not found, or moved between the read and the update) — the reconciler only ever sees
   those.

The UPDATE locks each row it changes and, where another transaction changed the row
meanwhile, re-reads it and applies nothing unless it is still in the decided-from status:
a decision is never applied to a message it was not made on, and a receipt whose message
moved is decided again by the reconciler, on the message as it then is, within a second.
The receipt is durable, and its effect applied (or left to the reconciler), before the
webhook is answered 2xx. A message whose send is not recorded yet (``queued``,
``sending``) is never locked: its receipts wait for the reconciler whatever happens, and
a lock would make the dispatcher's ``record_results`` wait for this transaction. Should
the transaction meet a deadlock (another transaction holds one of its messages and wants
another, e.g. the dispatcher recording a late result on an ``unknown`` message), the
batch is stored pending instead, as before this module: the reconciler applies it within
a second.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.queries import QUERIES
from engine.receipts import ReceiptRows, store_receipts
from engine.reconciler import Batch

log = logging.getLogger(__name__)

#: a receipt that matched no message is looked at again after this
RETRY_MISSING = timedelta(seconds=1)
#: ReceiptRows' columns, by name
_ACCOUNT, _PROVIDER_ID, _MESSAGE_ID, _EVENT_ID, _STATUS = range(5)
_CODE, _DETAIL, _PART, _OCCURRED, _REJECTED = 6, 7, 8, 9, 12


class Arrivals:
    """Outcomes of the receipts applied at arrival (cumulative, for metrics and tests)."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.fallbacks = 0


async def store_and_apply(
    conn: asyncpg.Connection, rows: ReceiptRows, source: str, arrivals: Arrivals | None = None
) -> int:
    """Store ``rows`` (in the caller's transaction, or one of its own), applying each that
    can be applied now; return how many were new."""
    if not rows:
        return 0
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            return await _apply(conn, rows, source, arrivals)
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        log.info("receipts stored for the reconciler (%s)", exc)
        if arrivals is not None:
            arrivals.fallbacks += 1
        return await store_receipts(conn, rows, source)


def _at(occurred: datetime | None, received: datetime) -> datetime:
    """The event's time, unless it claims a time after we received it or 30 days before."""
    if occurred is not None and received - timedelta(days=30) <= occurred <= received:
        return occurred
    return received


async def _apply(
    conn: asyncpg.Connection, rows: ReceiptRows, source: str, arrivals: Arrivals | None
) -> int:
    c = rows.columns
    matches = await conn.fetch(
        QUERIES["match_arrivals"],
        c[_ACCOUNT],
        c[_PROVIDER_ID],
        c[_MESSAGE_ID],
        c[_EVENT_ID],
        c[_PART],
    )
    received = matches[0]["received_at"]
    decided: list[dict[str, Any]] = []
    events: set[tuple[str, str]] = set()
    for i, match in enumerate(matches):
        event = (c[_ACCOUNT][i], c[_EVENT_ID][i])
        if c[_REJECTED][i] or match["seen"] or (event[1] is not None and event in events):
            continue  # stored settled as rejected, or a repeat the INSERT skips
        events.add(event)
        found = match["message_id"] is not None
        decided.append(
            {
                "id": i,
                "account": c[_ACCOUNT][i],
                "status": c[_STATUS][i],
                "part": c[_PART][i],
                "error_code": c[_CODE][i],
                "error_detail": c[_DETAIL][i],
                "provider_message_id": c[_PROVIDER_ID][i],
                "at": _at(c[_OCCURRED][i], received),
                "message_id": match["message_id"],
                "message_status": match["status"] if found else None,
                "segments": match["segments"] if found else None,
                "message_provider_id": match["provider_message_id"] if found else None,
            }
        )
    batch = Batch(decided)
    batch.triage()
    parts = batch.part_messages
    earlier: dict[int, list[asyncpg.Record]] = {}
    if parts:
        for row in await conn.fetch(QUERIES["applied_parts"], parts):
            earlier.setdefault(row["message_id"], []).append(row)
    batch.decide(earlier)
    if batch.changes:
        updated = await conn.fetch(QUERIES["apply_receipts"], *batch.change_columns())
        batch.lost({row["id"] for row in updated})  # moved since read: the reconciler's
    return await _insert(conn, rows, source, batch, arrivals)


async def _insert(
    conn: asyncpg.Connection,
    rows: ReceiptRows,
    source: str,
    batch: Batch,
    arrivals: Arrivals | None,
) -> int:
    n = len(rows)
    matched: list[int | None] = [None] * n
    settled, mode = [False] * n, ["wait"] * n
    outcome: list[str | None] = [None] * n
    for i, (result, message_id, how) in batch.settle.items():
        matched[i] = message_id
        settled[i] = how == "settle"
        outcome[i] = None if result is None else result.value
        mode[i] = how
        if arrivals is not None and how == "settle" and result is not None:
            arrivals.outcomes[result.value] += 1
    row = await conn.fetchrow(
        QUERIES["insert_decided_receipts"],
        *rows.columns,
        source,
        matched,
        settled,
        RETRY_MISSING,
        outcome,
        mode,
    )
    assert row is not None
    if row["suppressed"]:
        log.info("opt-out receipts: %d numbers suppressed", row["suppressed"])
    return int(row["stored"])
