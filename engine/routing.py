"""The dispatcher's side of routes: which accounts a run sends through now, and which
account each claimed message goes to.

A run's ``provider:`` names an account or a route (:mod:`engine.routes`). Its lane sends
while at least one of those accounts is up in this daemon (:mod:`engine.accounts`), at
the route's rate (the first account's for ``priority``, the sum of the accounts up for
``cheapest`` and ``spread``), and every claimed batch is split by account just before it
is sent (:meth:`Routing.assign`).

At most once across accounts: only ``queued`` messages are ever claimed, so a message is
only ever moved after its last send provably was not accepted (``retry``: connection
refused, a documented "nothing taken" answer, a 429; or ``account``: auth or credit), or
was never handed over at all. A message whose outcome was ``unknown`` is never claimed
again, so never sent through another account. A moved message keeps its one row: its
``account`` is rewritten before the request is made (one UPDATE per claimed batch, only
for the messages that move), and ``tried_accounts`` lists every account it was handed to.
A moved message's ``cost`` becomes its price on the new account (costs follow the route).
A move of a message that had already been handed to another account counts in
``engine_reroutes_total{from,to}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import asyncpg

from engine.accounts import AccountHealth
from engine.config import EngineConfig
from engine.metrics import Metrics
from engine.pacing import AccountState
from engine.pricing import NoRateError
from engine.queries import QUERIES
from engine.routes import Router


class Routing:
    """Route decisions for one dispatcher."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: EngineConfig,
        accounts: Mapping[str, AccountState],
        health: AccountHealth,
        worker: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.accounts = accounts
        self.health = health
        self.worker = worker
        self.metrics = metrics
        self.routers: dict[str, Router] = {}
        for name in config.routes:
            router = config.router(name)
            if router is not None:
                self.routers[name] = router

    def live(self, provider: str) -> list[str]:
        """The accounts of ``provider`` (an account or a route) this daemon may send
        through now: configured here and up."""
        if provider not in self.routers and provider not in self.config.providers:
            return []
        return [
            account
            for account in self.config.accounts_of(provider)
            if account in self.accounts and not self.health.is_down(account)
        ]

    def rate(self, provider: str, live: Sequence[str]) -> float:
        """Messages per second ``provider`` may send through ``live`` in this daemon."""
        router = self.routers.get(provider)
        if router is None:
            return self.accounts[provider].rate if provider in live else 0.0
        router.rates = {a: self.accounts[a].rate for a in router.accounts if a in self.accounts}
        return router.rate(live)

    def batch(self, live: Sequence[str]) -> int:
        """The largest request any of ``live`` takes."""
        return max((self.accounts[a].batch for a in live), default=1)

    async def assign(
        self, provider: str, rows: Sequence[asyncpg.Record], live: Sequence[str]
    ) -> dict[str, list[asyncpg.Record]]:
        """The claimed ``rows`` grouped by the account each goes to now; messages that
        change account are moved in the database first (one statement)."""
        router = self.routers.get(provider)
        if router is None or not rows:
            return {provider: list(rows)} if rows else {}
        chosen = router.assign([(row["phone"], row["account"]) for row in rows], live)
        groups: dict[str, list[asyncpg.Record]] = {}
        moved_ids: list[int] = []
        moved_to: list[str] = []
        costs: list[Decimal | None] = []
        for row, account in zip(rows, chosen, strict=True):
            # nobody up (every account went down since the claim): it stays where it was,
            # and the send finds its account down and puts it back unsent
            target = account or row["account"]
            groups.setdefault(target, []).append(row)
            if target != row["account"]:
                moved_ids.append(row["id"])
                moved_to.append(target)
                costs.append(_cost(router, target, row))
                if row["tried"] and self.metrics is not None:
                    self.metrics.reroutes.labels(row["account"], target).inc()
        if moved_ids:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    QUERIES["move_messages"], moved_ids, moved_to, self.worker, costs
                )
        return groups


def _cost(router: Router, account: str, row: asyncpg.Record) -> Decimal | None:
    """What the message costs on ``account`` (None: no price there, keep the estimate)."""
    try:
        return router.prices[account].cost(row["segments"] or 0, row["phone"])
    except NoRateError:
        return None
