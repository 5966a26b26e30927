"""Account health: when an account cannot send, pause the account, never fail its recipients.

A send answered with the account's problem (``Outcome.ACCOUNT``: 401/403 or the provider's
documented bad-credentials or suspended error, reason ``auth``; 402 or no credit, reason
``credit``) says nothing about the message. The dispatcher puts the message back in the
queue without counting an attempt, and :class:`AccountHealth` marks the account down in
``account_health`` (one warning line naming the account and the reason). Every daemon reads
that table at each pass of its loop (and is woken by ``NOTIFY engine, 'account'``), so no
daemon claims for a down account; requests already in flight come back the same way and
are re-queued too. Nothing about it is ever ``failed``, and the failure brake does not
count it.

While an account is down, one daemon at a time (``claim_account_probe``) probes it with
the adapter's :meth:`~engine.providers.base.Adapter.check`, an authenticated read that sends
nothing: the first after ``PROBE_FIRST`` seconds, then doubling up to ``PROBE_CAP``. A check
that succeeds marks it up, and every daemon resumes within a second.
``engine providers check ACCOUNT`` does the same at once. An account that fails again
within ten minutes of coming back keeps its backoff, so a check that passes while sends
still fail (credit, where the provider shows no balance) costs a batch per backoff step,
not a batch per 30 s.

Accounts behind a route (issue 21) also go down for *failing*: each daemon counts their
send results (:mod:`engine.health_rules`: connection refused, 5xx before acceptance,
timeouts, 429s beyond the Retry-After budget) and marks the account down, reason
``failing``, after ``health.down_after`` failures in a row or ``health.failure_ratio`` of
the last ``health.window`` sends. The probe is the same authenticated read, first after
``health.cooloff``, doubling up to ``health.cooloff_max``; routes send through the other
accounts meanwhile. Each change of health is one log line (the daemon that recorded it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from engine.errors import EngineError
from engine.health_rules import FailureTracker, HealthConfig
from engine.metrics import Metrics
from engine.providers.base import Adapter, CheckFailed, SendResult
from engine.queries import QUERIES

log = logging.getLogger(__name__)

#: seconds before the first probe of a down account; doubled per failed probe up to the cap
PROBE_FIRST = 30.0
PROBE_CAP = 600.0


@dataclass(frozen=True, slots=True)
class Down:
    """Why an account cannot send."""

    reason: str
    detail: str | None = None


async def mark_up(conn: asyncpg.Connection, account: str) -> bool:
    """Record that ``account`` authenticates again and wake every daemon; True if it was
    down."""
    was_down: bool = await conn.fetchval(QUERIES["account_up"], account)
    await conn.execute(QUERIES["notify_accounts"])
    return was_down


class AccountHealth:
    """The dispatcher's view of which accounts may send, kept in step with the database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        adapters: Mapping[str, Adapter[Any]],
        metrics: Metrics | None = None,
        *,
        first: float = PROBE_FIRST,
        cap: float = PROBE_CAP,
        rules: HealthConfig | None = None,
        watched: Collection[str] = (),
    ) -> None:
        self.pool = pool
        self.adapters = adapters
        self.metrics = metrics
        self.first = first
        self.cap = cap
        #: failure counters of the accounts behind a route (engine.health_rules)
        self.trackers = {
            account: FailureTracker(rules or HealthConfig())
            for account in watched
            if account in adapters
        }
        self.down: dict[str, Down] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}

    def is_down(self, account: str) -> bool:
        """Whether nothing may be claimed or sent for ``account`` now."""
        return account in self.down

    async def observe(self, account: str, results: list[SendResult]) -> None:
        """Count one request's results of an account behind a route; mark it down, reason
        ``failing``, when the rules say so."""
        tracker = self.trackers.get(account)
        if tracker is None or account in self.down:
            return
        why = tracker.observe(results)
        if why is not None:
            tracker.reset()
            await self._mark_down(account, "failing", why)

    async def mark_down(self, account: str, result: SendResult) -> None:
        """A send said the account cannot send: record it for every daemon (once)."""
        reason = str(result.reason or "auth")
        detail = f"{result.error_code}: {result.error_detail or ''}".strip(": ")
        await self._mark_down(account, reason, detail)

    async def _mark_down(self, account: str, reason: str, detail: str) -> None:
        if account in self.down:
            return
        self._set(account, Down(reason, detail))
        async with self.pool.acquire() as conn:
            was_up = await conn.fetchval(
                QUERIES["account_down"], account, reason, detail, self.first, self.cap
            )
            await conn.execute(QUERIES["notify_accounts"])
        if was_up:
            log.warning(
                "account %s cannot send (%s: %s): down, its messages stay queued"
                " or go through another account of their route",
                account,
                reason,
                detail,
                extra={"account": account, "reason": reason},
            )

    async def refresh(self) -> None:
        """Read every account's health (another daemon, or ``providers check``, may have
        changed it) and start the probes that are due."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["account_health"])
        for row in rows:
            account = row["account"]
            if account not in self.adapters:
                continue
            if row["up"] and account in self.down:
                del self.down[account]
                self._gauge(account, 1)
                if account in self.trackers:
                    self.trackers[account].reset()
                log.debug("account %s can send again", account, extra={"account": account})
            elif not row["up"]:
                self._set(account, Down(row["reason"] or "auth", row["detail"]))
        for account in self.down:
            task = self._probes.get(account)
            if task is None or task.done():
                self._probes[account] = asyncio.create_task(
                    self._probe(account), name=f"probe-{account}"
                )

    async def close(self) -> None:
        """Cancel probes in progress."""
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()

    async def _probe(self, account: str) -> None:
        """Check the account if its probe is due and no other daemon took it."""
        try:
            async with self.pool.acquire() as conn:
                due = await conn.fetchrow(
                    QUERIES["claim_account_probe"], account, self.first, self.cap
                )
            if due is None:
                return
            try:
                said = await self.adapters[account].check()
            except CheckFailed as exc:
                log.info(
                    "account %s still cannot send: %s", account, exc, extra={"account": account}
                )
                async with self.pool.acquire() as conn:
                    await conn.execute(
                        QUERIES["account_probe_failed"],
                        account,
                        exc.reason and str(exc.reason),
                        str(exc),
                    )
                return
            async with self.pool.acquire() as conn:
                await mark_up(conn, account)
            log.warning(
                "account %s is up again (%s): resuming",
                account,
                said,
                extra={"account": account},
            )
        except (
            EngineError,
            OSError,
            TimeoutError,
            aiohttp.ClientError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            log.warning("probe of account %s failed: %s", account, exc, extra={"account": account})

    def _set(self, account: str, down: Down) -> None:
        self.down[account] = down
        self._gauge(account, 0)

    def _gauge(self, account: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.account_up.labels(account).set(value)
