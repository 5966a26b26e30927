"""Retention: ``engine db prune --older-than 90d`` (issue 20).

Drops the per-message rows of runs that ended before the cutoff, and keeps their history:

1. each such run's ``campaign_outcomes`` row is copied into ``run_summaries`` and the run is
   marked ``pruned_at`` (migration 0013), in one statement; the view reads pruned runs from
   there, so counts, delivery rate, cost and latency percentiles survive;
2. its messages are deleted in batches of :data:`BATCH`, one short transaction each, so a
   dispatcher claiming beside it never waits long (the claim touches other runs' rows;
   what the two share is the index pages and the WAL);
3. settled receipts received before the cutoff, walked from the oldest in id order, in
   batches too; then refused webhook calls received before it.

Only runs that can no longer send are pruned (completed, cancelled, missed, failed), never
a paused or over-budget run. A prune stopped half-way (Ctrl-C, a crash) leaves every run
either untouched or summarised; the next prune finishes the summarised ones. Contacts,
groups, suppressions, campaigns, runs and replies (``inbound_messages``) are kept.

A frequency cap counts the messages a number received within its period: a cutoff shorter
than the longest cap's period would let a capped number through again, so the command
refuses a cutoff under :data:`MIN_AGE` and the docs say to keep it above every cap.
Deleted rows become free space for new ones after autovacuum; the files do not shrink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from engine.errors import EngineError
from engine.queries import QUERIES

log = logging.getLogger(__name__)

#: rows per delete statement (and per transaction)
BATCH = 5000
#: the shortest cutoff accepted
MIN_AGE = timedelta(days=1)


class PruneError(EngineError):
    """The prune cannot be done as asked."""


@dataclass(slots=True)
class Pruned:
    """What a prune deleted (or, dry, would delete)."""

    runs: int = 0
    messages: int = 0
    receipts: int = 0
    rejected: int = 0


def cutoff(now: datetime, older_than: timedelta) -> datetime:
    """The instant before which rows go; PruneError for a cutoff under :data:`MIN_AGE`."""
    if older_than < MIN_AGE:
        raise PruneError(
            f"--older-than must be at least {MIN_AGE.days}d: keep more than the longest"
            " frequency cap's period"
        )
    return now - older_than


async def count(conn: asyncpg.Connection, before: datetime) -> Pruned:
    """What :func:`prune` would delete before ``before`` (runs counted as summarised)."""
    runs = await conn.fetch(QUERIES["prunable_runs"], before)
    row = await conn.fetchrow(QUERIES["count_prunable"], before)
    assert row is not None
    return Pruned(len(runs), row["messages"], row["receipts"], row["rejected"])


async def prune(
    conn: asyncpg.Connection,
    before: datetime,
    *,
    batch: int = BATCH,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Summarise and delete everything older than ``before`` (see the module docstring)."""
    done = Pruned()
    for run in await conn.fetch(QUERIES["prunable_runs"], before):
        if not run["summarised"]:
            await conn.execute(QUERIES["summarise_run"], run["id"])
        done.runs += 1
        while True:
            status = await conn.execute(QUERIES["prune_messages"], run["id"], batch)
            deleted = int(status.split()[-1])
            done.messages += deleted
            if progress is not None:
                progress(done)
            if deleted < batch:
                break
    after = 0
    while True:
        ids = await conn.fetch(QUERIES["prune_receipts"], before, after, batch)
        done.receipts += len(ids)
        if len(ids) < batch:
            break
        after = max(row["id"] for row in ids)
    status = await conn.execute(QUERIES["prune_rejected_webhooks"], before)
    done.rejected = int(status.split()[-1])
    log.info(
        "pruned %d runs: %d messages, %d receipts, %d refused webhook calls",
        done.runs,
        done.messages,
        done.receipts,
        done.rejected,
    )
    return done
