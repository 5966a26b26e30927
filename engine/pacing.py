"""How fast this daemon sends to each provider account: its share of the account's rate
(an :class:`aiolimiter.AsyncLimiter`, a bulk request takes one token per message), a
semaphore capping requests in flight, and the pause a provider's ``retry_after`` asks for.

Whether an account can send at all (credentials, credit) is :mod:`engine.accounts`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter

from engine.providers.base import Adapter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AccountState:
    """One provider account as this dispatcher sends to it."""

    adapter: Adapter[Any]
    rate: float
    concurrency: int
    limiter: AsyncLimiter = field(init=False)
    semaphore: asyncio.Semaphore = field(init=False)
    paused_until: float = 0.0

    def __post_init__(self) -> None:
        self.limiter = AsyncLimiter(self.rate, 1)
        self.semaphore = asyncio.Semaphore(self.concurrency)

    @property
    def batch(self) -> int:
        """Messages per request: the adapter's batch, never more than a second of tokens."""
        return max(1, min(self.adapter.max_batch, int(self.rate)))

    def set_rate(self, rate: float) -> None:
        """Change the rate (the share of the account this daemon may use)."""
        if not math.isclose(rate, self.rate):
            self.rate = rate
            self.limiter = AsyncLimiter(rate, 1)

    def pause(self, seconds: float) -> None:
        """Send nothing on this account for ``seconds`` (the provider said 429)."""
        loop = asyncio.get_running_loop()
        self.paused_until = max(self.paused_until, loop.time() + seconds)
        log.warning("account paused for %.1fs", seconds, extra={"account": self.adapter.name})

    async def wait_unpaused(self) -> None:
        """Sleep out a pause, if any."""
        delay = self.paused_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
