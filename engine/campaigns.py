"""Campaigns in the database: apply, list, runs, manual and test sends.

``apply`` is idempotent: the stored spec carries a hash of the campaign and of its
audience file, so applying an unchanged file changes nothing. A campaign with a run in
progress cannot be changed. The audience file's rows are imported as contacts into the
group ``campaign:<name>`` (replacing the previous file's members) and its invalid rows
are kept, so every run records them as ``invalid_number``.

The first firing is set on apply: ``now`` campaigns fire at once, ``at`` campaigns at
their instant (a past instant is handled by the scheduler's misfire rule), ``cron``
campaigns at their next firing.

A run stopped by the budget gate (``over_budget``) has its messages ``cancelled`` with the
error code ``over_budget``. ``engine campaign resume NAME`` re-checks the gate for the
campaign's latest run against the budget of the campaign as applied now (and the account's
balance, where the provider reports one): within it, those messages are queued again and
the run sends; still over, nothing changes and the reason is the error. Older over-budget
runs stay cancelled: sending a stale firing late is rarely what anyone wants. Applying a
``now`` campaign again makes it fire anew; when that firing is due, it is the run that
sends (with the new budget) and the over-budget one stays cancelled, so nobody gets both.

Archiving (``archive_campaign``) hides a campaign from ``engine campaign list`` and takes
away its next firing; its runs and messages stay. A run in progress must end (or be
paused and cancelled) first. Applying the campaign's file again brings it back: a changed
file is an ordinary update; an unchanged one gets back the firing it would have had (a
campaign that had finished or was cancelled stays so, and nothing fires twice).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from engine import audiencefile
from engine.config import EngineConfig
from engine.contacts_import import ImportReport, import_contacts
from engine.errors import EngineError
from engine.expander import budget_gate, file_group
from engine.message_rows import LINK_COLUMNS
from engine.queries import QUERIES
from engine.run_plans import plan_run
from engine.spec import Campaign
from engine.status import MessageStatus, RunStatus
from engine.timing import SendTiming, utcnow

log = logging.getLogger(__name__)


class CampaignError(EngineError):
    """A campaign cannot be changed or run as asked."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one campaign file did."""

    name: str
    action: str  # created, updated, unchanged, unarchived or "updated, unarchived"
    next_run_at: datetime | None
    file_report: ImportReport | None = None


def first_firing(campaign: Campaign, now: datetime) -> datetime | None:
    """When a newly applied campaign fires first."""
    schedule = campaign.schedule
    if schedule.kind == "now":
        return now
    if schedule.kind == "at":
        return schedule.at_utc
    return schedule.next_fire_time(now)


def content_hash(campaign: Campaign) -> str:
    """Hash of the spec and of the audience file's bytes: unchanged means unchanged."""
    digest = hashlib.sha256(campaign.spec_hash().encode())
    if campaign.audience.file is not None:
        with audiencefile.opened(Path(campaign.audience.file)) as stream:
            hashlib.file_digest(stream, lambda: digest)
    return digest.hexdigest()


async def apply_campaign(
    conn: asyncpg.Connection,
    campaign: Campaign,
    source: Path,
    config: EngineConfig,
    *,
    now: datetime | None = None,
) -> Applied:
    """Store or update one campaign; refuse while one of its runs is in progress."""
    now = now or utcnow()
    digest = content_hash(campaign)
    async with conn.transaction():
        row = await conn.fetchrow(QUERIES["campaign_for_apply"], campaign.name)
        if row is not None and row["spec_hash"] == digest:
            if row["archived_at"] is not None:
                return await _unarchive(conn, row["id"], campaign, now)
            return Applied(campaign.name, "unchanged", None)
        if row is not None:
            await _refuse_if_running(conn, row["id"], campaign.name)
        next_run = first_firing(campaign, now)
        spec = campaign.spec_json()
        if row is None:
            campaign_id = await conn.fetchval(
                QUERIES["insert_campaign"], campaign.name, spec, digest, str(source), next_run
            )
        else:
            campaign_id = row["id"]
            await conn.execute(
                QUERIES["update_campaign"], campaign_id, spec, digest, str(source), next_run
            )
    report = await _load_file(conn, campaign_id, campaign, config)
    action = "created" if row is None else "updated"
    if row is not None and row["archived_at"] is not None:
        action += ", unarchived"
    return Applied(campaign.name, action, next_run, report)


async def _refuse_if_running(conn: asyncpg.Connection, campaign_id: int, name: str) -> None:
    active = await conn.fetchrow(QUERIES["active_run"], campaign_id)
    if active is not None:
        raise CampaignError(
            f"campaign {name!r} has run {active['id']} in progress ({active['status']}); "
            "wait for it to finish, or pause or cancel it, before changing the campaign"
        )


async def _load_file(
    conn: asyncpg.Connection, campaign_id: int, campaign: Campaign, config: EngineConfig
) -> ImportReport | None:
    await conn.execute(QUERIES["clear_invalid_recipients"], campaign_id)
    group = file_group(campaign.name)
    await conn.execute(QUERIES["clear_group_members"], group)
    if campaign.audience.file is None:
        return None
    report = await import_audience_file(conn, Path(campaign.audience.file), group, config)
    if report.invalid:
        bad = report.invalid
        await conn.execute(
            QUERIES["insert_invalid_recipients_of_file"],
            campaign_id,
            [p.line for p in bad],
            [p.raw for p in bad],
            [p.reason for p in bad],
        )
    return report


async def _unarchive(
    conn: asyncpg.Connection, campaign_id: int, campaign: Campaign, now: datetime
) -> Applied:
    next_run = await conn.fetchval(
        QUERIES["unarchive_campaign"], campaign_id, first_firing(campaign, now)
    )
    return Applied(campaign.name, "unarchived", next_run)


async def archive_campaign(conn: asyncpg.Connection, name: str) -> bool:
    """Hide a campaign and stop its firings; False when it was archived already."""
    async with conn.transaction():
        # locked, as apply does, so that a scheduler tick cannot fire it meanwhile
        row = await conn.fetchrow(QUERIES["campaign_for_apply"], name)
        if row is None:
            raise CampaignError(f"no campaign named {name!r} (apply its file first)")
        await _refuse_if_running(conn, row["id"], name)
        archived = await conn.fetchval(QUERIES["archive_campaign"], row["id"])
    return archived is not None


async def campaign_row(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    """The stored campaign, or a clear error naming it."""
    row = await conn.fetchrow(QUERIES["campaign_by_name"], name)
    if row is None:
        raise CampaignError(f"no campaign named {name!r} (apply its file first)")
    return row


async def create_run_now(conn: asyncpg.Connection, name: str) -> int:
    """A manual run of the campaign, due now (the scheduler's expander picks it up)."""
    row = await campaign_row(conn, name)
    run_id: int = await conn.fetchval(
        QUERIES["insert_manual_run"],
        row["id"],
        utcnow(),
        "manual",
        RunStatus.SCHEDULED.value,
        row["spec"],
    )
    return run_id


@dataclass(frozen=True, slots=True)
class TestSend:
    """The single message of a test run."""

    run_id: int
    message_id: int
    status: MessageStatus
    body: str | None
    detail: str | None


async def create_test_send(
    conn: asyncpg.Connection, name: str, phone: str, config: EngineConfig
) -> TestSend:
    """Render the campaign for one number and queue it as a run of its own.

    A test run bypasses the audience, the budget and the frequency cap, but never an
    opt-out. The contact's own data is used when the number is a known contact; otherwise
    ``first_name`` and ``last_name`` get sample values.
    """
    row = await campaign_row(conn, name)
    campaign = Campaign.from_spec(row["spec"])
    rec = await _test_recipient(conn, phone, campaign.channel)
    if rec["suppressed"]:
        raise CampaignError(f"{phone} has opted out; a test send is not allowed")
    async with conn.transaction():
        now = utcnow()
        run_id = await conn.fetchval(
            QUERIES["insert_manual_run"],
            row["id"],
            now,
            "test",
            RunStatus.SENDING.value,
            row["spec"],
        )
        plan = plan_run(run_id, campaign, config, whole_audience=True)
        values = plan.decide(rec, SendTiming(campaign, now), None)
        assert values is not None  # a test recipient is never excluded
        message_id = await conn.fetchval(QUERIES["insert_test_message"], *values)
        if codes := "".join(plan.take_links()).encode():  # its tracked links
            await conn.copy_to_table(
                "link_codes", source=io.BytesIO(codes), columns=LINK_COLUMNS, format="text"
            )
    status = MessageStatus(values[11])
    return TestSend(run_id, message_id, status, values[6], values[15])


async def _test_recipient(conn: asyncpg.Connection, phone: str, channel: str) -> dict[str, Any]:
    known = await conn.fetchrow(QUERIES["contact_by_phone"], phone, channel)
    if known is not None:
        return dict(known)
    suppressed = await conn.fetchval(QUERIES["is_suppressed_on"], phone, channel)
    return {
        "id": None,
        "phone": phone,
        "first_name": "Test",
        "last_name": "Recipient",
        "locale": None,
        "timezone": None,
        "attributes": {},
        "excluded": False,
        "suppressed": suppressed,
        "recent": 0,
    }


async def import_audience_file(
    conn: asyncpg.Connection, path: Path, group: str, config: EngineConfig
) -> ImportReport:
    """Import the validated audience file, opened so that only that file is read."""
    with audiencefile.opened(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        return await import_contacts(
            conn, text, group=group, region=config.default_region, name=str(path)
        )


@dataclass(frozen=True, slots=True)
class Requeued:
    """An over-budget run that the gate now lets through (or that a newer firing replaces)."""

    run_id: int
    messages: int
    newer_firing: datetime | None = None


async def resume_over_budget(
    conn: asyncpg.Connection,
    name: str,
    balance: Callable[[str], Awaitable[Decimal | None]] | None = None,
) -> Requeued | None:
    """Re-check the budget gate for the campaign's latest run if it is ``over_budget``.

    None when that run is not over budget; CampaignError with the reason when it still is.
    """
    row = await campaign_row(conn, name)
    campaign = Campaign.from_spec(row["spec"])
    async with conn.transaction():
        run = await conn.fetchrow(QUERIES["latest_real_run_for_update"], row["id"])
        if run is None or run["status"] != "over_budget":
            return None
        if run["newer_firing"] is not None:
            return Requeued(run["id"], 0, run["newer_firing"])
        held = await conn.fetchrow(QUERIES["over_budget_messages"], run["id"])
        funds = await balance(run["account"] or campaign.provider) if balance else None
        status, reason = budget_gate(
            campaign, {MessageStatus.QUEUED.value: held["n"]}, held["cost"], funds
        )
        if status is RunStatus.OVER_BUDGET:
            raise CampaignError(
                f"run {run['id']} of {name!r} is still over budget: {reason}; raise "
                "limits.budget in the campaign file, apply it, then resume"
            )
        requeued = await conn.fetchval(QUERIES["requeue_over_budget"], run["id"])
        await conn.execute(QUERIES["notify_work"], f"run:{run['id']}")
    return Requeued(run["id"], int(requeued or 0))
