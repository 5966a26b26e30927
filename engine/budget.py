"""How many messages the claim loops of one lane may hold claimed at once.

DESIGN.md promises that a crash (kill -9) leaves at most about one second of sending
``unknown``: what is claimed but not yet recorded. The dispatcher runs several claim loops
per lane (``PIPELINE``) and a bulk account sends whole batches, so each loop's own claim
size is no bound: they share one :class:`ClaimBudget` of about one second of the lane's
rate (never less than one message), and a loop waits for room before it claims.
"""

from __future__ import annotations

import asyncio
import math


class ClaimBudget:
    """A counter of claimed messages that never exceeds ``limit``."""

    def __init__(self, limit: int = 1) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self._room = asyncio.Condition()

    @staticmethod
    def for_rate(per_second: float, ceiling: int) -> int:
        """About one second of sending at ``per_second``, at most ``ceiling``, at least 1."""
        return max(1, min(ceiling, math.ceil(per_second)))

    async def take(self, want: int, limit: int) -> int:
        """Wait for room under ``limit`` (the rate may have changed); take up to ``want``."""
        async with self._room:
            self.limit = max(1, limit)
            await self._room.wait_for(lambda: self.held < self.limit)
            taken = min(max(1, want), self.limit - self.held)
            self.held += taken
            return taken

    async def give(self, count: int) -> None:
        """Return ``count`` messages' room (they were recorded, or never claimed)."""
        async with self._room:
            self.held -= count
            self._room.notify_all()
