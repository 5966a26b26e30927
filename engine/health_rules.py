"""When a sending account counts as failing: ``health:`` in ``engine.yaml`` and the counter.

Every send result of an account behind a route is one observation
(:meth:`FailureTracker.observe`):

- a *failure* is a result that proves the account is not taking messages now: a
  ``retry`` (connection refused or reset before the request was written, a connect
  timeout, a 5xx the provider documents as "nothing taken"), an ``unknown`` whose code is
  a timeout or a 5xx (the message itself stays ``unknown``, never rerouted, but the
  account is sick), and a 429 whose ``Retry-After`` is longer than ``retry_after_budget``;
- a *success* is an accepted send, or a rejection (the provider answered: the message was
  at fault, not the account);
- anything else (a 429 within budget, other ``unknown`` answers) is not counted.

The account is marked down (for every daemon: :mod:`engine.accounts`) when the last
``down_after`` observations were all failures, or when at least ``failure_ratio`` of the
last ``window`` were (and the window is full). After that it is probed after ``cooloff``,
doubling per failed probe up to ``cooloff_max``; a successful probe brings it up.
Auth and credit refusals mark an account down at once, whatever these settings.

Each daemon counts what it saw itself; the verdict is shared through the database. An
account that no route names keeps the single-account behaviour: its provable failures
are retried with backoff and then fail the message (only auth and credit pause it).
No I/O (it reads send results, so it loads the provider package).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import Field

from engine.providers.results import Outcome, SendResult
from engine.strict import Strict
from engine.values import Duration

#: ``unknown`` codes that say the account did not answer in time
TIMEOUT_CODES = frozenset({"timeout"})


class HealthConfig(Strict):
    """``health:`` in engine.yaml."""

    down_after: int = Field(default=5, ge=1)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=50, ge=1)
    cooloff: Duration = timedelta(seconds=30)
    cooloff_max: Duration = timedelta(minutes=10)
    retry_after_budget: Duration = timedelta(seconds=60)


def verdict(result: SendResult, budget: float) -> bool | None:
    """True: a failure of the account; False: it answered; None: says nothing."""
    if result.outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
        return False
    if result.outcome is Outcome.RETRY:
        if result.retry_after is not None or result.error_code == "429":
            return (result.retry_after or 0.0) > budget
        return True
    if result.outcome is Outcome.UNKNOWN:
        code = result.error_code or ""
        return True if code in TIMEOUT_CODES or (code.isdigit() and code[0] == "5") else None
    return None  # ``account``: handled at once by engine.accounts


@dataclass(slots=True)
class FailureTracker:
    """One account's recent observations in this daemon."""

    config: HealthConfig
    run: int = 0
    recent: deque[bool] = field(default_factory=deque)
    last_failure: str | None = None

    def observe(self, results: list[SendResult]) -> str | None:
        """Count one request's results; return why the account is failing, else None."""
        budget = self.config.retry_after_budget.total_seconds()
        for result in results:
            failed = verdict(result, budget)
            if failed is None:
                continue
            self.recent.append(failed)
            if len(self.recent) > self.config.window:
                self.recent.popleft()
            if failed:
                self.run += 1
                self.last_failure = f"{result.error_code}: {result.error_detail or ''}".strip(": ")
            else:
                self.run = 0
        if self.run >= self.config.down_after:
            return f"{self.run} failures in a row, last {self.last_failure}"
        if len(self.recent) >= self.config.window:
            ratio = sum(self.recent) / len(self.recent)
            if ratio >= self.config.failure_ratio:
                return (
                    f"{ratio:.0%} of the last {len(self.recent)} sends failed,"
                    f" last {self.last_failure}"
                )
        return None

    def reset(self) -> None:
        """Forget the past (the account was marked down, or came back up)."""
        self.run = 0
        self.recent.clear()
