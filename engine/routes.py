"""Routes: one name in a campaign's ``provider:`` for several provider accounts.

``routes:`` in ``engine.yaml`` maps a route name to a strategy and an ordered list of
accounts::

    routes:
      za-main:
        strategy: priority        # priority | cheapest | spread
        accounts: [zc-main, zenvia-br]

A campaign's ``provider:`` names an account or a route. Which account carries a message
is decided twice, by the same :class:`Router`:

- at expansion (and ``engine campaign preview``), as if every account were up: the row's
  ``account`` and ``cost`` are that account's, so the budget gate and the preview's split
  per account estimate what the route would do now;
- by the dispatcher, just before each send, among the accounts that are up then
  (:mod:`engine.accounts`). A message whose chosen account differs from its row's is
  moved (one batched UPDATE of ``messages.account`` per claimed batch, before the
  request is made, so lease recovery and receipts always see the account that may carry
  it).

Strategies, among the accounts that are up (list order breaks ties):

``priority``  the first account of the list.
``cheapest``  the lowest price per segment for the recipient's prefix (the account's own
              ``pricing`` layered over the global table, :mod:`engine.pricing`); an account
              with no rate for the number is skipped.
``spread``    messages shared in proportion to the accounts' rates (smooth weighted round
              robin), so the route sends at the sum of their rates. At dispatch a message
              stays on the account expansion gave it while that account is up.

Validation (:func:`route_problems`): a route must list at least one account, every account
must exist in ``providers:``, no account may be listed twice, and no name may be both an
account and a route. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from pydantic import Field

from engine.pricing import NoRateError, PriceTable
from engine.strict import Strict

Strategy = Literal["priority", "cheapest", "spread"]


class RouteConfig(Strict):
    """One route of ``engine.yaml``."""

    strategy: Strategy = "priority"
    accounts: tuple[str, ...] = Field(min_length=1)


def route_problems(
    routes: Mapping[str, RouteConfig], accounts: Collection[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every problem with ``routes`` as ``(location in engine.yaml, message)``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    known = ", ".join(sorted(accounts)) or "none"
    for name, route in routes.items():
        if name in accounts:
            problems.append((("routes", name), f"{name!r} is both a provider account and a route"))
        seen: set[str] = set()
        for i, account in enumerate(route.accounts):
            loc: tuple[str | int, ...] = ("routes", name, "accounts", i)
            if account not in accounts:
                problems.append((loc, f"unknown provider account {account!r} (known: {known})"))
            elif account in seen:
                problems.append((loc, f"account {account!r} is listed twice"))
            seen.add(account)
    return problems


@dataclass(slots=True)
class Router:
    """Chooses the account for each message of one route."""

    name: str
    strategy: Strategy
    accounts: tuple[str, ...]
    prices: Mapping[str, PriceTable]
    rates: Mapping[str, float]
    #: smooth weighted round robin: each account's running credit (``spread``)
    _credit: dict[str, float] = field(default_factory=dict)
    #: cheapest account by (prefix, accounts up), so a batch costs a dict get per message
    _cheapest: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def up(self, healthy: Collection[str] | None) -> tuple[str, ...]:
        """The route's accounts that may send (all of them when ``healthy`` is None)."""
        if healthy is None:
            return self.accounts
        return tuple(a for a in self.accounts if a in healthy)

    def choose(self, phone: str, healthy: Collection[str] | None = None) -> str | None:
        """The account for a message to ``phone`` (None: every account is down)."""
        up = self.up(healthy)
        if not up:
            return None
        if self.strategy == "priority" or len(up) == 1:
            return up[0]
        if self.strategy == "cheapest":
            return self._cheapest_for(phone, up)
        return self._next_spread(up)

    def assign(
        self, phones: Sequence[tuple[str, str]], healthy: Collection[str]
    ) -> list[str | None]:
        """The account for each ``(phone, current account)`` of a claimed batch."""
        up = self.up(healthy)
        if self.strategy == "spread":
            return [
                current if current in up else self.choose(phone, up) for phone, current in phones
            ]
        return [self.choose(phone, up) for phone, _ in phones]

    def rate(self, healthy: Collection[str]) -> float:
        """Messages per second the route can send: the first account's rate for
        ``priority``, the sum of the accounts' up for the others."""
        up = self.up(healthy)
        if not up:
            return 0.0
        if self.strategy == "priority":
            return self.rates[up[0]]
        return sum(self.rates[a] for a in up)

    def _cheapest_for(self, phone: str, up: tuple[str, ...]) -> str:
        longest = max(self.prices[a].longest_prefix for a in up)
        key = (phone[: longest + 1], up)
        found = self._cheapest.get(key)
        if found is None:
            best: tuple[Decimal, int] | None = None
            found = up[0]
            for i, account in enumerate(up):
                try:
                    rate = self.prices[account].rate_for(phone)
                except NoRateError:
                    continue
                if best is None or (rate, i) < best:
                    best, found = (rate, i), account
            if len(self._cheapest) < 100_000:
                self._cheapest[key] = found
        return found

    def _next_spread(self, up: tuple[str, ...]) -> str:
        total = 0.0
        for account in up:
            weight = max(self.rates[account], 1e-9)
            self._credit[account] = self._credit.get(account, 0.0) + weight
            total += weight
        chosen = max(up, key=lambda a: self._credit[a])
        self._credit[chosen] -= total
        return chosen
