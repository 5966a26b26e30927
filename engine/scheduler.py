"""When campaigns fire: due runs, missed firings, and manual runs.

A run is one firing of a campaign (``campaign_runs``), unique per (campaign,
scheduled_for). The daemon calls :func:`create_due_runs` every second: it locks the
active campaigns whose ``next_run_at`` has come (``FOR UPDATE SKIP LOCKED``, so two
daemons never create the same runs), inserts their runs and moves ``next_run_at`` on.

Firings missed while no daemon ran are recorded, not lost: the latest one is made up
once if it is within ``misfire_grace``; every older one (and the latest, when too old)
becomes a ``missed`` run with the reason.

A run ends here too: :func:`complete_runs` closes the sending runs that have nothing left
to learn (every message final, or past the receipt window or its last status lookup).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from engine.queries import QUERIES
from engine.spec import Campaign
from engine.status import RunStatus

log = logging.getLogger(__name__)

#: firings examined per campaign per tick, so a long outage cannot stall the scheduler
MAX_CATCH_UP = 1000


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing of a campaign and whether it will run."""

    campaign: str
    scheduled_for: datetime
    status: RunStatus
    run_id: int | None


def firings_due(campaign: Campaign, first: datetime, now: datetime) -> list[datetime]:
    """Every firing from ``first`` up to ``now`` (at most MAX_CATCH_UP of them)."""
    times = [first]
    while len(times) < MAX_CATCH_UP:
        following = campaign.schedule.next_fire_time(times[-1])
        if following is None or following > now:
            break
        times.append(following)
    return times


def classify(times: list[datetime], now: datetime, grace: timedelta) -> list[RunStatus]:
    """Scheduled for the latest firing if within the grace period; missed for the rest."""
    statuses = [RunStatus.MISSED] * len(times)
    if times and now - times[-1] <= grace:
        statuses[-1] = RunStatus.SCHEDULED
    return statuses


async def create_due_runs(
    conn: asyncpg.Connection, now: datetime, misfire_grace: timedelta
) -> list[Firing]:
    """Create the runs of every due campaign and move each campaign to its next firing."""
    fired: list[Firing] = []
    async with conn.transaction():
        for row in await conn.fetch(QUERIES["due_campaigns"], now):
            campaign = Campaign.from_spec(row["spec"])
            fired += await _fire(conn, row["id"], campaign, row["next_run_at"], now, misfire_grace)
    return fired


async def _fire(
    conn: asyncpg.Connection,
    campaign_id: int,
    campaign: Campaign,
    first: datetime,
    now: datetime,
    grace: timedelta,
) -> list[Firing]:
    times = firings_due(campaign, first, now)
    fired = []
    for when, status in zip(times, classify(times, now, grace), strict=True):
        reason = None
        if status is RunStatus.MISSED:
            reason = f"missed: no scheduler ran within {grace} of {when.isoformat()}"
        run_id = await conn.fetchval(
            QUERIES["insert_run"],
            campaign_id,
            when,
            "scheduled",
            status.value,
            reason,
            campaign.spec_json(),
        )
        fired.append(Firing(campaign.name, when, status, run_id))
        log.info(
            "campaign fired",
            extra={"campaign": campaign.name, "run": run_id, "status": status.value},
        )
    following = campaign.schedule.next_fire_time(max(times[-1], now))
    await conn.execute(QUERIES["set_next_run"], campaign_id, following)
    return fired


async def complete_runs(conn: asyncpg.Connection, receipt_window: timedelta) -> int:
    """Complete the sending runs with nothing left to learn; return how many."""
    rows = await conn.fetch(QUERIES["complete_runs"], receipt_window)
    for row in rows:
        log.info("run completed", extra={"run": row["id"]})
    return len(rows)
