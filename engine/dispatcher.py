"""The dispatcher: queued messages to providers, exactly once, at the provider's pace.

One *lane* per run in ``sending`` claims that run's due messages in batches (one
``FOR UPDATE SKIP LOCKED`` statement that also expires stale messages and drops numbers
that opted out since expansion), sends them through the account's adapter, and records
the results in groups as the requests finish (one ``UPDATE ... FROM unnest(...)`` per
group of up to ``FLUSH_ROWS`` results or ``FLUSH_AFTER`` seconds, so a receipt rarely
arrives before its send is recorded). Lanes of one account
share its :class:`aiolimiter.AsyncLimiter` (a bulk request takes one token per message)
and a semaphore capping requests in flight; a run's own ``limits.rate`` adds a limiter of
its own. The claim loops of a lane together hold at most about one second of sending at
its rate claimed (never less than one message; :mod:`engine.budget`), however large the
account's batch, so a crash can leave at most that many messages ``unknown``.

Outcomes (DESIGN.md, "Delivery semantics"): ``accepted`` → ``sent``; ``rejected`` →
``failed``; ``account`` (the account cannot send: credentials, credit) → ``queued`` again
without spending an attempt, and the account is paused for every daemon until it
authenticates again (:mod:`engine.accounts`: no lane claims for it, requests not yet sent
are put back unsent, the failure brake does not count it); ``retry`` → ``queued`` again
after exponential backoff with jitter (or the provider's ``retry_after``, which also
pauses the whole account), ``failed`` once ``max_attempts`` is reached; ``unknown`` →
``unknown``, never resent automatically.
A message that now falls in its recipient's quiet hours goes back to ``queued`` until they
end, without spending an attempt.

The failure brake: when at least ``failure_ratio`` of a run's last ``failure_window``
sends were rejected, the run is paused with the reason (a broken template or account
must not burn a whole audience).

``stop()`` stops claiming and lets in-flight sends finish within the grace period; a
request cancelled before it started goes back to ``queued``, one cancelled in flight
becomes ``unknown``. Leases of a dispatcher that died are recovered by any live one
(:meth:`Dispatcher.recover_leases`).

A run whose ``provider:`` is a route (:mod:`engine.routes`) has one lane too: it sends
while any of the route's accounts is up, at the route's rate, and each claimed batch is
split by account just before sending (:mod:`engine.routing`: a message moves only while it
is ``queued`` again after a send that provably was not accepted, never after ``unknown``).
The send results of an account behind a route feed its health (:mod:`engine.accounts`).

This module is the lane and its claim-send loops; the parts it drives live beside it:
:mod:`engine.send_results` (recording results in groups, the outcome → status table),
:mod:`engine.brake` (the failure brake), :mod:`engine.pacing` (an account's rate,
concurrency and pauses in this daemon), :mod:`engine.accounts` (whether an account can
send at all) and :mod:`engine.budget` (how much a lane may hold claimed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiolimiter import AsyncLimiter

from engine.accounts import AccountHealth
from engine.brake import FailureBrake
from engine.budget import ClaimBudget
from engine.config import EngineConfig
from engine.metrics import Metrics
from engine.pacing import AccountState
from engine.providers.base import Adapter, Outbound, Outcome, SendResult
from engine.queries import QUERIES
from engine.redact import Redactor
from engine.routing import Routing
from engine.send_results import ACCOUNT_DOWN, Chunk, Held, Recorder, Results
from engine.spec import Campaign
from engine.status import MessageStatus
from engine.timing import SendTiming, recipient_zone, utcnow

log = logging.getLogger(__name__)

#: a lane claims at most this many messages at once, however fast the account
MAX_CLAIM = 5000
#: claim-send-record loops per run, so one batch's database work overlaps another's sends
PIPELINE = 3
#: seconds a stop waits for claims on their way before cancelling them (what a cancelled
#: claim had claimed, if the server committed it, becomes ``unknown`` by lease recovery)
CLAIM_PATIENCE = 10.0


class Dispatcher:
    """Claims, rate-limits, sends and records; one instance per daemon."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: EngineConfig,
        worker: str,
        adapters: Mapping[str, Adapter[Any]],
        *,
        poll_interval: float = 1.0,
        lease: timedelta = timedelta(seconds=60),
        failure_window: int = 200,
        failure_ratio: float = 0.2,
        share: Callable[[str], float] | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.pool = pool
        self.config = config
        self.worker = worker
        self.poll_interval = poll_interval
        self.lease = lease
        self.failure_window = failure_window
        self.failure_ratio = failure_ratio
        self.share = share or (lambda account: 1.0)
        self.rng = rng or random.Random()
        self.accounts = {
            name: AccountState(adapter, self._rate(name), config.providers[name].concurrency)
            for name, adapter in adapters.items()
        }
        self.redact = Redactor.of(adapters.values())
        self.recorder = Recorder(pool, worker, config.max_attempts, self.rng, self.redact)
        self.health = AccountHealth(
            pool,
            adapters,
            metrics,
            first=config.health.cooloff.total_seconds(),
            cap=config.health.cooloff_max.total_seconds(),
            rules=config.health,
            watched=config.routed_accounts(),
        )
        self.routing = Routing(pool, config, self.accounts, self.health, worker, metrics)
        self._lanes: dict[int, asyncio.Task[int]] = {}
        self._metric_children: dict[str, tuple[Any, Any, dict[Outcome, Any]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        #: claims on their way (see _claim): stop() waits for them
        self._claims: set[asyncio.Future[list[asyncpg.Record]]] = set()

    def _rate(self, account: str) -> float:
        return self.config.providers[account].rate.per_second * self.share(account)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve every sending run until :meth:`stop`."""
        while not self._stopping.is_set():
            await self.serve_once()
            await self._idle()

    async def serve_once(self) -> None:
        """Start a lane for every sending run that has none (lanes end when idle)."""
        for name, state in self.accounts.items():
            state.set_rate(self._rate(name))
        await self.health.refresh()
        async with self.pool.acquire() as conn:
            runs = await conn.fetch(QUERIES["sending_runs"])
        for run in runs:
            if self._stopping.is_set():
                # stop() came while this pass read the runs: a lane started now would
                # outlive stop() unsupervised, claiming and sending after it returned
                break
            task = self._lanes.get(run["id"])
            if (task is None or task.done()) and self.routing.live(run["account"]):
                self._lanes[run["id"]] = asyncio.create_task(
                    self._lane(run["id"], Campaign.from_spec(run["spec"])), name=f"lane-{run['id']}"
                )
        await self._reap()

    async def _reap(self) -> None:
        for run_id, task in list(self._lanes.items()):
            if task.done():
                del self._lanes[run_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("lane failed", exc_info=task.exception(), extra={"run": run_id})

    async def _idle(self) -> None:
        """Wait for a NOTIFY, the poll interval or stop, whichever comes first."""
        waiters = [
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._wake.clear()

    def wake(self) -> None:
        """New work may be due (called on NOTIFY)."""
        self._wake.set()

    async def drain(self) -> None:
        """Serve until a round of lanes finds nothing due (for tests and benchmarks)."""
        while True:
            await self.serve_once()
            done = await asyncio.gather(*self._lanes.values(), return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException):
                    raise result
            if not any(done):
                return

    async def stop(self, grace: timedelta) -> None:
        """Stop claiming; give in-flight sends ``grace`` to finish, then cancel them."""
        self._stopping.set()
        await self.health.close()
        lanes = list(self._lanes.values())
        if not lanes:
            return
        _, pending = await asyncio.wait(lanes, timeout=grace.total_seconds())
        for task in pending:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        if self._claims:  # claims a cancelled lane left on their way: a database that
            # does not answer at all must not hold the stop for ever
            _, stuck = await asyncio.wait(set(self._claims), timeout=CLAIM_PATIENCE)
            for claim in stuck:
                claim.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        self._lanes.clear()

    # --- one run ----------------------------------------------------------------------

    async def _lane(self, run_id: int, campaign: Campaign) -> int:
        """Send the run's due messages until none is due; return how many were claimed.

        ``PIPELINE`` loops claim, send and record side by side (SKIP LOCKED keeps them
        apart), so the database round trips of one batch overlap the sending of another;
        together they still claim about one second of sending.
        """
        provider = campaign.provider  # an account, or a route (engine.routing)
        own = campaign.limits.rate
        run_limiter = AsyncLimiter(own.per_second, 1) if own is not None else None
        brake = FailureBrake(self.pool, run_id, self.failure_window, self.failure_ratio)
        braked = asyncio.Event()
        budget = ClaimBudget()

        async def loop() -> int:
            total = 0
            while not (self._stopping.is_set() or braked.is_set()):
                live = self.routing.live(provider)
                if not live:
                    break
                rate = self.routing.rate(provider, live)
                rate = min(rate, own.per_second) if own is not None else rate
                limit = ClaimBudget.for_rate(rate, MAX_CLAIM)
                size = await budget.take(max(self.routing.batch(live), limit // PIPELINE), limit)
                try:
                    claimed = await self._claim(
                        run_id, size, campaign.schedule.quiet_hours is not None
                    )
                    if not claimed:
                        break
                    total += len(claimed)
                    rejected = await self._send_claimed(campaign, live, run_limiter, claimed)
                finally:
                    await asyncio.shield(budget.give(size))
                if await brake.record(rejected):
                    braked.set()
            return total

        return sum(await asyncio.gather(*(loop() for _ in range(PIPELINE))))

    async def _claim(self, run_id: int, size: int, quiet_hours: bool) -> list[asyncpg.Record]:
        """Claim a batch, in a task of its own that a stop does not cancel (stop() waits for
        it instead). A claim that gets its answer after stop() was called puts the messages
        it claimed back in the queue: none of them started. Cancelling the statement
        instead could leave messages claimed by a statement the server had committed, which
        lease recovery would later call ``unknown`` though nothing was sent."""
        claim = asyncio.ensure_future(self._claim_unless_stopped(run_id, size, quiet_hours))
        self._claims.add(claim)
        claim.add_done_callback(self._claims.discard)
        return await asyncio.shield(claim)

    async def _claim_unless_stopped(
        self, run_id: int, size: int, quiet_hours: bool
    ) -> list[asyncpg.Record]:
        rows = await self._claim_rows(run_id, size, quiet_hours)
        if not self._stopping.is_set():
            return rows
        unstarted = [r for r in rows if r["status"] == MessageStatus.SENDING.value]
        if unstarted:
            await Results(self.recorder).settle([Chunk(unstarted)], [], cancelled=True)
        return []

    async def _claim_rows(self, run_id: int, size: int, quiet_hours: bool) -> list[asyncpg.Record]:
        lease_until = utcnow() + self.lease
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                QUERIES["claim_messages"], run_id, size, self.worker, lease_until, quiet_hours
            )
        return rows

    async def _send_claimed(
        self,
        campaign: Campaign,
        live: Sequence[str],
        run_limiter: AsyncLimiter | None,
        claimed: Sequence[asyncpg.Record],
    ) -> list[bool]:
        sending = [row for row in claimed if row["status"] == MessageStatus.SENDING.value]
        now = utcnow()
        timing = SendTiming(campaign, now)
        waiting = self._held(sending, timing, now)
        held = {row["id"] for row, _ in waiting}
        groups = await self.routing.assign(
            campaign.provider, [r for r in sending if r["id"] not in held], live
        )
        chunks: list[Chunk] = []
        results = Results(self.recorder)
        tasks = []
        for name, rows in groups.items():
            account = self.accounts[name]
            mine = [Chunk(part, name) for part in _split(rows, account.batch)]
            chunks += mine
            # a few workers per account pull its chunks in turn: one task per request
            # would have thousands of tasks wake and queue on the semaphore
            todo = iter(mine)
            tasks += [
                asyncio.create_task(self._send_chunks(account, run_limiter, todo, results))
                for _ in range(min(len(mine), account.concurrency))
            ]
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            # cancelled (a stop), or a group's UPDATE failed: no request goes on alone
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, asyncio.CancelledError):
                await asyncio.shield(results.settle(chunks, waiting, cancelled=True))
            raise
        await results.settle(chunks, waiting, cancelled=False)
        return results.rejected

    @staticmethod
    def _release(row: asyncpg.Record, timing: SendTiming) -> datetime:
        """When the recipient's quiet hours let this message go (now, if they are awake)."""
        zone = recipient_zone(row["timezone"], row["phone"], timing.campaign.schedule.timezone)
        return timing.times(zone)[0]

    def _held(
        self, rows: Sequence[asyncpg.Record], timing: SendTiming, now: datetime
    ) -> list[Held]:
        """The messages whose recipient's quiet hours hold them, and until when."""
        if timing.campaign.schedule.quiet_hours is None:
            return []
        releases = ((row, self._release(row, timing)) for row in rows)
        return [(row, until) for row, until in releases if until > now]

    async def _send_chunks(
        self,
        account: AccountState,
        run_limiter: AsyncLimiter | None,
        chunks: Iterator[Chunk],
        results: Results,
    ) -> None:
        for chunk in chunks:
            await self._send_chunk(account, run_limiter, chunk)
            await results.done(chunk)

    async def _send_chunk(
        self, account: AccountState, run_limiter: AsyncLimiter | None, chunk: Chunk
    ) -> None:
        waited = time.monotonic()
        if run_limiter is not None:
            await run_limiter.acquire(len(chunk.rows))
        await account.limiter.acquire(len(chunk.rows))
        await account.wait_unpaused()
        name = account.adapter.name
        async with account.semaphore:
            if self.health.is_down(name):  # it went down while this waited: do not send
                chunk.results = [ACCOUNT_DOWN] * len(chunk.rows)
                return
            chunk.started = True
            started = time.monotonic()
            chunk.results = await account.adapter.send([_outbound(r) for r in chunk.rows])
        if self.metrics is not None:
            self._observe(
                account.adapter.name, started - waited, time.monotonic() - started, chunk.results
            )
        pauses = [r.retry_after for r in chunk.results if r.retry_after]
        if pauses:
            account.pause(max(pauses))
        refused = next((r for r in chunk.results if r.outcome is Outcome.ACCOUNT), None)
        if refused is not None:
            await self.health.mark_down(name, refused)
        else:
            await self.health.observe(name, chunk.results)

    def _observe(
        self, account: str, waited: float, took: float, results: Sequence[SendResult]
    ) -> None:
        assert self.metrics is not None
        children = self._metric_children.get(account)
        if children is None:  # labels() costs a lock and a dict lookup: once per account
            m = self.metrics
            children = self._metric_children[account] = (
                m.limiter_wait.labels(account),
                m.send_latency.labels(account),
                {o: m.sent.labels(account, o.value) for o in Outcome},
            )
        wait, latency, sent = children
        wait.observe(waited)
        latency.observe(took)
        if len(results) == 1:
            sent[results[0].outcome].inc()
            return
        for outcome, count in Counter(r.outcome for r in results).items():
            sent[outcome].inc(count)

    # --- leases -------------------------------------------------------------------------

    async def recover_leases(self) -> int:
        """Settle messages whose dispatcher died mid-send; return how many."""
        safe = [name for name, state in self.accounts.items() if state.adapter.idempotent_sends]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["recover_leases"], safe)
        if rows:
            log.warning("recovered %d expired leases", len(rows))
        return len(rows)


def _split(rows: Sequence[asyncpg.Record], size: int) -> list[list[asyncpg.Record]]:
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]


def _outbound(row: asyncpg.Record) -> Outbound:
    return Outbound(
        message_id=row["id"],
        to=row["phone"],
        body=row["body"],
        sender=row["sender"],
        channel=row["channel"],
        encoding=row["encoding"],
        segments=row["segments"],
    )
