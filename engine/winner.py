"""The A/B winner: a test share first, then the best variant for the rest of the audience.

A run of a campaign with ``message.winner`` is expanded twice:

1. the test: :func:`expansion_phase` records the test in ``ab_tests`` (due at the
   expansion's start + ``after``) and the expander writes rows only for the recipients in
   ``test_share`` (engine.variants), split by weight. The run cannot complete while its
   test is undecided (``complete_runs`` waits for it).
2. :func:`decide_due` (a daemon timer) finds due tests of runs that expanded their test
   (sending, or completed when the test share had nobody to send to), reads
   ``variant_outcomes`` at that moment, picks the variant with the best rate (``clicks``:
   click-through, clickers / delivered; ``delivered``: delivered / accepted; a tie goes to
   the variant written first), records the winner with every variant's figures, and puts
   the run back to ``scheduled``. The expander then expands the rest of the audience (and
   only it) with the winning variant; the test's rows stay as they are.

A variant without a rate (nothing delivered yet) ranks below any rate; when no variant has
one, the first variant wins (and the figures say so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from engine.queries import QUERIES
from engine.spec import Campaign

log = logging.getLogger(__name__)


async def expansion_phase(
    conn: asyncpg.Connection, run_id: int, campaign: Campaign, now: datetime
) -> str | None:
    """The winning variant when this expansion is the rest after the test, else None
    (starting the test when it has not started)."""
    test = campaign.message.winner
    if test is None:
        return None
    row = await conn.fetchrow(QUERIES["ab_test_get"], run_id)
    if row is None:
        await conn.execute(
            QUERIES["ab_test_start"], run_id, test.by, test.test_share, now + test.after
        )
        return None
    return row["winner"] if row["decided_at"] is not None else None


def choose(
    by: str, figures: Sequence[Mapping[str, Any]], order: Sequence[str]
) -> tuple[str, Decimal | None]:
    """The winner among ``figures`` (rows of variant_outcomes) and its rate."""
    field = "click_through_rate" if by == "clicks" else "delivery_rate"
    rates = {row["variant"]: row[field] for row in figures}
    best, best_rate = order[0], rates.get(order[0])
    for name in order[1:]:
        rate = rates.get(name)
        if rate is not None and (best_rate is None or rate > best_rate):
            best, best_rate = name, rate
    return best, best_rate


async def decide_due(pool: asyncpg.Pool, now: datetime | None = None) -> list[tuple[int, str]]:
    """Decide every test due at ``now`` (default: now); return (run id, winner) of each.
    A decision NOTIFYs ``tick``, which wakes the daemons' expanders."""
    now = now or datetime.now(UTC)
    decided = []
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(QUERIES["ab_tests_due"], now):
            campaign = Campaign.from_spec(row["spec"])
            figures = [dict(r) for r in await conn.fetch(QUERIES["ab_test_figures"], row["run_id"])]
            order = [v.name for v in campaign.message.variants]
            name, rate = choose(row["by"], figures, order)
            record = {
                "by": row["by"],
                "rate": rate,
                "variants": {f["variant"]: f for f in figures},
            }
            await conn.execute(QUERIES["ab_test_decide"], row["run_id"], name, _json(record), now)
            log.info(
                "A/B winner chosen",
                extra={"run": row["run_id"], "winner": name, "by": row["by"]},
            )
            decided.append((int(row["run_id"]), name))
        if decided:
            await conn.execute(QUERIES["notify_work"], "tick")
    return decided


def _json(value: Any) -> Any:
    """Figures as JSON-able data (rates as numbers)."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else str(value)
