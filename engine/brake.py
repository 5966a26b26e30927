"""The failure brake: a run mostly rejected is paused with the reason.

When at least ``ratio`` of a run's last ``window`` sends were rejected, the run is paused
(a broken template or account must not burn a whole audience). An account's own problem
(``Outcome.ACCOUNT``) is not a rejection and is not counted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable

import asyncpg

from engine.queries import QUERIES

log = logging.getLogger(__name__)


class FailureBrake:
    """One lane's recent send results, shared by its claim loops."""

    def __init__(self, pool: asyncpg.Pool, run_id: int, window: int, ratio: float) -> None:
        self.pool = pool
        self.run_id = run_id
        self.window = window
        self.ratio = ratio
        self.recent: deque[bool] = deque(maxlen=window)

    async def record(self, rejected: Iterable[bool]) -> bool:
        """Add results (True: rejected) in the order recorded; True if the run was paused."""
        self.recent.extend(rejected)
        recent = self.recent
        if len(recent) < self.window or not recent[-1]:
            return False
        rejections = sum(recent)
        if rejections < self.ratio * len(recent):
            return False
        reason = (
            f"paused by the failure brake: {rejections} of the last {len(recent)} sends "
            "were rejected"
        )
        async with self.pool.acquire() as conn:
            await conn.execute(QUERIES["pause_run"], self.run_id, reason)
        log.warning(reason, extra={"run": self.run_id})
        return True
