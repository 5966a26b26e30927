"""Expansion: one run of a campaign becomes one ``messages`` row per recipient.

The audience is resolved in SQL and streamed in keyset batches (contact id order), so
memory stays flat however large it is. For each recipient the expander decides, in this
order: excluded (no row), ``suppressed``, ``frequency_capped``, ``render_error`` (with
the missing variable), ``too_long`` (over ``max_segments``), ``failed``/``no_price`` (no
rate for the destination), else ``queued`` with its encoding, segments, cost,
``next_attempt_at`` (after the recipient's quiet hours) and ``expires_at``.

Each batch is written with COPY, and the run's checkpoint (the last contact id) is saved
in the same transaction, so a crash resumes exactly after the last committed batch and no
recipient is queued twice (the unique (run, phone) constraint backs this up). Two batches
are written at once, on two connections, while the next is fetched and computed:
PostgreSQL's COPY of one batch, its checks of the other and Python's rendering overlap
on the cores there are. Batches commit in order (each waits for the one before it after
its COPY, before its checkpoint), so the checkpoint never passes a batch that did not
commit.
A batch is computed in a worker thread, so however slow its templates (each render is
bounded by :mod:`engine.template_limits`), the event loop keeps serving webhooks and
heartbeats; a render past a limit, or holding a character PostgreSQL text cannot store
(NUL), is that recipient's ``render_error``.

What each recipient's row says is decided, and formatted as COPY text, by
:mod:`engine.message_rows`; the send times by :mod:`engine.timing`.

When the audience is exhausted the budget gate runs: the estimated cost of the queued
messages is compared with ``limits.budget``; within it the run moves to ``sending``,
over it the run becomes ``over_budget`` and nothing is sent.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
from pydantic import ValidationError

from engine import winner
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.links import rekey
from engine.message_rows import COPY_COLUMNS, LINK_COLUMNS, RunPlan, RunStopped
from engine.queries import QUERIES
from engine.run_plans import plan_run
from engine.spec import Campaign, FrequencyCap
from engine.status import MessageStatus, RunStatus
from engine.timing import SendTiming, utcnow

log = logging.getLogger(__name__)

#: pg_advisory_lock class for "this run is being expanded"
RUN_LOCK_CLASS = 0x6578


@dataclass(frozen=True, slots=True)
class ExpansionResult:
    """What one expansion did."""

    run_id: int
    status: RunStatus
    recipients: int
    counts: Mapping[str, int]
    estimated_cost: Decimal
    reason: str | None = None


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no provider account {exc.args[0]!r} in the configuration"
    if isinstance(exc, ValidationError):
        return f"the stored campaign is invalid: {exc.error_count()} error(s)"
    return str(exc)


def credits(amount: Decimal) -> str:
    """An amount of credits as people write it: 5, 2.5, 0.0125."""
    return format(amount.normalize(), "f")


def run_lock_key(run_id: int) -> int:
    """The advisory-lock key an expander holds on a run while expanding it."""
    return (RUN_LOCK_CLASS << 40) | run_id


class Expander:
    """Claims due runs and expands them, one at a time per instance."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: EngineConfig,
        worker: str,
        *,
        batch_size: int = 5000,
        clock: Callable[[], datetime] | None = None,
        balance: Callable[[str], Awaitable[Decimal | None]] | None = None,
    ) -> None:
        self.balance = balance
        self.pool = pool
        self.config = config
        self.worker = worker
        self.batch_size = batch_size
        self.clock = clock or utcnow

    async def run_once(self) -> ExpansionResult | None:
        """Claim one run (new, or interrupted by a dead expander) and expand it."""
        async with self.pool.acquire() as conn:
            run_id = await self._claim(conn)
            if run_id is None:
                return None
            try:
                return await self.expand(conn, run_id)
            finally:
                await conn.execute(QUERIES["unlock_run"], run_lock_key(run_id))

    async def _claim(self, conn: asyncpg.Connection) -> int | None:
        async with conn.transaction():
            run_id: int | None = await conn.fetchval(QUERIES["claim_run"], self.clock())
            if run_id is not None:
                await conn.execute(QUERIES["lock_run"], run_lock_key(run_id))
                await conn.execute(QUERIES["mark_expanding"], run_id, self.worker)
                return run_id
        for row in await conn.fetch(QUERIES["orphaned_expansions"]):
            if await conn.fetchval(QUERIES["try_lock_run"], run_lock_key(row["id"])):
                log.warning("resuming interrupted expansion", extra={"run": row["id"]})
                await conn.execute(QUERIES["mark_expanding"], row["id"], self.worker)
                return int(row["id"])
        return None

    async def expand(self, conn: asyncpg.Connection, run_id: int) -> ExpansionResult:
        """Expand one claimed run from its checkpoint to the end, then apply the budget gate."""
        run = await conn.fetchrow(QUERIES["run_for_expansion"], run_id)
        try:
            campaign = Campaign.from_spec(run["spec"] or {})
            won = await winner.expansion_phase(conn, run_id, campaign, self.clock())
            plan = plan_run(run_id, campaign, self.config, winner=won)
        except (ValidationError, EngineError, KeyError) as exc:
            # a run that cannot be expanded (its account was removed from the config, its
            # stored spec is unreadable) fails with the reason; other runs go on
            reason = f"cannot expand: {_reason(exc)}"
            await conn.execute(QUERIES["fail_run"], run_id, reason)
            log.error(reason, extra={"run": run_id})
            return ExpansionResult(run_id, RunStatus.FAILED, 0, {}, Decimal(0), reason)
        sources = await Sources.resolve(conn, campaign, run["name"])
        after = int((run["checkpoint"] or {}).get("after", 0))
        if after == 0:
            await conn.execute(
                QUERIES["insert_invalid_recipients"],
                run_id,
                run["campaign_id"],
                campaign.channel,
                campaign.provider,
            )
        timing = SendTiming(campaign, max(self.clock(), run["scheduled_for"]))
        try:
            await self._stream(conn, plan, sources, timing, after)
        except RunStopped:
            log.info("expansion stopped: run left 'expanding'", extra={"run": run_id})
            return await self._result(conn, run_id, None)
        return await self._finish(conn, run_id, campaign, sources)

    async def _stream(
        self,
        conn: asyncpg.Connection,
        plan: RunPlan,
        sources: Sources,
        timing: SendTiming,
        after: int,
    ) -> None:
        cap = sources.cap_count
        async with self.pool.acquire() as one, self.pool.acquire() as other:
            #: the batches being written, oldest first: at most two, one per connection
            writing: list[tuple[asyncio.Task[None], asyncpg.Connection]] = []
            try:
                async for records in sources.batches(
                    conn, plan.campaign.channel, self.clock(), after, self.batch_size
                ):
                    lines = await _lines_off_loop(plan, records, timing, cap)
                    codes = "".join(plan.take_links()).encode()
                    if len(writing) == 2:
                        await writing.pop(0)[0]  # its connection takes this batch
                    payload = "".join(lines).encode()
                    before = writing[-1] if writing else None
                    writer = other if before is not None and before[1] is one else one
                    task = asyncio.create_task(
                        _write(
                            writer,
                            plan.run_id,
                            payload,
                            records[-1]["id"],
                            codes,
                            before[0] if before else None,
                        )
                    )
                    writing.append((task, writer))
                for task, _ in writing:
                    await task
            except asyncio.CancelledError:
                for task, _ in writing:
                    task.cancel()
                raise
            finally:
                # batches being written when something else failed still commit, in order
                await asyncio.gather(*(task for task, _ in writing), return_exceptions=True)

    async def _finish(
        self, conn: asyncpg.Connection, run_id: int, campaign: Campaign, sources: Sources
    ) -> ExpansionResult:
        duplicates = await sources.duplicates(conn)
        counts, cost = await _tally(conn, run_id)
        if duplicates:
            counts[MessageStatus.DUPLICATE.value] = int(duplicates)
        balance = await self._balance(campaign.provider) if counts.get("queued") else None
        status, reason = budget_gate(campaign, counts, cost, balance)
        recipients = sum(n for key, n in counts.items() if key != MessageStatus.DUPLICATE.value)
        await conn.execute(
            QUERIES["finish_expansion"], run_id, status.value, reason, recipients, cost, counts
        )
        if status is RunStatus.SENDING:
            await conn.execute(QUERIES["notify_work"], f"run:{run_id}")
        log.info(
            "expanded run",
            extra={
                "run": run_id,
                "campaign": campaign.name,
                "recipients": recipients,
                "status": status.value,
            },
        )
        return ExpansionResult(run_id, status, recipients, counts, cost, reason)

    async def _balance(self, account: str) -> Decimal | None:
        if self.balance is None:
            return None
        try:
            return await self.balance(account)
        except EngineError as exc:  # an unreadable balance must not stop a campaign
            log.warning("cannot read the balance of %s: %s", account, exc)
            return None

    async def _result(
        self, conn: asyncpg.Connection, run_id: int, reason: str | None
    ) -> ExpansionResult:
        counts, cost = await _tally(conn, run_id)
        status = RunStatus(await conn.fetchval(QUERIES["run_status"], run_id))
        return ExpansionResult(run_id, status, sum(counts.values()), counts, cost, reason)


async def _lines_off_loop(
    plan: RunPlan, records: list[asyncpg.Record], timing: SendTiming, cap: int | None
) -> list[str]:
    """A batch's COPY lines, computed in a worker thread.

    Rendering is CPU work bounded per message (see engine.template_limits) but not per batch,
    so it runs off the event loop: webhooks, /healthz and heartbeats go on meanwhile. One
    batch at a time touches the plan's caches. When the expansion is cancelled, the thread
    stops at the next recipient instead of finishing the batch.
    """
    stop = threading.Event()
    try:
        return await asyncio.to_thread(plan.lines, records, timing, cap, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


async def _write(
    conn: asyncpg.Connection,
    run_id: int,
    payload: bytes,
    after: int,
    codes: bytes = b"",
    before: asyncio.Task[None] | None = None,
) -> None:
    """One batch: its messages and their link codes (COPY), and the checkpoint. A random
    link code already stored (about once in 10^10 batches) writes the batch again with
    fresh codes (engine.links.rekey).

    Two batches are written at once, each on its own connection, so that the COPY of one
    runs on one core while PostgreSQL checks and indexes the other's; ``before`` (the
    batch before this one) is waited for after the COPY and before the checkpoint, so
    batches commit in order and a checkpoint never passes a batch that is not committed.
    Should ``before`` fail or stop the run, this batch rolls back with it."""
    for attempt in range(5):
        try:
            async with conn.transaction():
                if payload:
                    await conn.copy_to_table(
                        "messages", source=io.BytesIO(payload), columns=COPY_COLUMNS, format="text"
                    )
                if codes:
                    await conn.copy_to_table(
                        "link_codes", source=io.BytesIO(codes), columns=LINK_COLUMNS, format="text"
                    )
                if before is not None:
                    await asyncio.shield(before)
                if (
                    await conn.fetchval(QUERIES["save_checkpoint"], run_id, {"after": after})
                    is None
                ):
                    raise RunStopped
            return
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "link_codes_pkey" or attempt == 4:
                raise
            payload, codes = rekey(payload, codes)


async def _tally(conn: asyncpg.Connection, run_id: int) -> tuple[dict[str, int], Decimal]:
    counts: dict[str, int] = {}
    cost = Decimal(0)
    for row in await conn.fetch(QUERIES["run_tally"], run_id):
        counts[row["status"]] = int(row["n"])
        cost += row["cost"]
    return counts, cost


def budget_gate(
    campaign: Campaign, counts: Mapping[str, int], cost: Decimal, balance: Decimal | None = None
) -> tuple[RunStatus, str | None]:
    """The run's status after expansion: sending, over_budget, or completed if nothing to send.

    The provider account's credit balance, where the provider reports one, is a second
    budget: a run the account cannot pay for does not start either.
    """
    budget = campaign.limits.budget
    if budget is not None and cost > budget:
        return RunStatus.OVER_BUDGET, (
            f"estimated cost {credits(cost)} credits exceeds the budget of {credits(budget)}"
            " credits"
        )
    if balance is not None and cost > balance:
        return RunStatus.OVER_BUDGET, (
            f"estimated cost {credits(cost)} credits exceeds the balance of "
            f"{credits(balance)} credits on account {campaign.provider}"
        )
    if not counts.get(MessageStatus.QUEUED.value):
        return RunStatus.COMPLETED, "no recipient to send to"
    return RunStatus.SENDING, None


@dataclass(frozen=True, slots=True)
class Sources:
    """A campaign's audience as group ids and phones, resolved once per run."""

    groups: list[int]
    excluded: list[int]
    listed: list[str]
    frequency_cap: FrequencyCap | None

    @classmethod
    async def resolve(cls, conn: asyncpg.Connection, campaign: Campaign, name: str) -> Sources:
        audience = campaign.audience
        names = list(audience.groups)
        if audience.file is not None:
            names.append(file_group(name))
        found = {
            row["name"]: row["id"]
            for row in await conn.fetch(QUERIES["group_ids"], names + list(audience.exclude_groups))
        }
        return cls(
            groups=[found[n] for n in names if n in found],
            excluded=[found[n] for n in audience.exclude_groups if n in found],
            listed=list(audience.contacts),
            frequency_cap=campaign.limits.frequency_cap,
        )

    @property
    def cap_count(self) -> int | None:
        """At most this many recent messages per recipient, or None without a cap."""
        return None if self.frequency_cap is None else self.frequency_cap.count

    async def batches(
        self, conn: asyncpg.Connection, channel: str, now: datetime, after: int, size: int
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """The audience after contact id ``after``, in keyset batches of ``size``."""
        since = None if self.frequency_cap is None else now - self.frequency_cap.period
        while True:
            records = await conn.fetch(
                QUERIES["audience_batch"],
                after,
                self.groups,
                self.listed,
                self.excluded,
                channel,
                since,
                size,
            )
            if not records:
                return
            yield records
            after = records[-1]["id"]

    async def duplicates(self, conn: asyncpg.Connection) -> int:
        """Recipients reached through more than one source, counted once per extra source."""
        return int(await conn.fetchval(QUERIES["audience_duplicates"], self.groups, self.listed))


def file_group(campaign_name: str) -> str:
    """The group that holds a campaign's audience-file contacts."""
    return f"campaign:{campaign_name}"
