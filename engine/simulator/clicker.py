"""Simulated recipients who click: a share of delivered messages' links is followed.

With ``clicks`` (a share of delivered messages, 0 by default) or ``click_rates`` (a
substring of the body → the share for messages that contain it; the first that matches
wins), the simulator "clicks" the first link of a delivered message shortly after its
delivery, by calling that URL (the engine's ``/l/{code}`` redirect) without following the
redirect. The demo uses this to show click-through and an A/B winner.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

import aiohttp

from engine.links import find_urls

if TYPE_CHECKING:
    from engine.simulator.model import Stats
    from engine.simulator.settings import FamilySettings

log = logging.getLogger(__name__)


class Clicker:
    """Follows links of delivered messages, a configurable share of them."""

    def __init__(self, rng: random.Random, stats: Stats) -> None:
        self.rng = rng
        self.stats = stats
        self.session: aiohttp.ClientSession | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def maybe_click(self, settings: FamilySettings, body: str, delay: float) -> None:
        """Decide whether this delivered message is clicked, and if so schedule it."""
        share = next(
            (rate for text, rate in settings.click_rates.items() if text in body),
            settings.clicks,
        )
        if share <= 0 or self.rng.random() >= share:
            return
        spans = find_urls(body)
        if not spans:
            return
        url = body[spans[0][0] : spans[0][1]]
        after = delay + self.rng.uniform(0.05, 0.3)
        asyncio.get_running_loop().call_later(after, self._start, url)

    def _start(self, url: str) -> None:
        if self.session is None or self.session.closed:
            return
        task = asyncio.create_task(self._click(self.session, url))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _click(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    self.stats.clicks += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("simulated click on %s failed: %s", url, exc)

    async def close(self) -> None:
        """Drop the clicks still waiting."""
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
