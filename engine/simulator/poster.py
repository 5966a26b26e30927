"""Posting receipts and replies to each family's webhook when they are due."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING

import aiohttp

from engine.simulator.model import Post, SimEvent
from engine.simulator.routes import ProviderRoutes

if TYPE_CHECKING:
    from engine.simulator.core import Simulator

log = logging.getLogger(__name__)


class ReceiptPoster:
    """Posts queued events to each family's webhook when they are due.

    One scheduler task keeps a heap by due time and hands due events to the family's
    ready queue; ``post_workers`` workers per family take up to ``receipts_per_post``
    events at a time, render them and POST, retrying ``post_attempts`` times before
    counting them dropped. When ``max_pending_receipts`` events wait, send requests wait
    for room (``room``) before accepting more, so receipts are never lost to a full queue
    and a slow webhook receiver slows the senders down.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.pending = 0
        #: set while no event waits to be posted
        self.idle = asyncio.Event()
        self.idle.set()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._inbox: asyncio.Queue[tuple[float, int, ProviderRoutes, SimEvent]] = asyncio.Queue()
        self._ready: dict[str, asyncio.Queue[SimEvent]] = {}
        self._order = itertools.count()

    async def room(self) -> None:
        """Wait while ``max_pending_receipts`` events wait to be posted."""
        await self._has_room.wait()

    def release(self) -> None:
        """Stop making senders wait (shutting down)."""
        self._has_room.set()

    def submit(self, routes: ProviderRoutes, event: SimEvent) -> None:
        """Queue an event to be posted when due."""
        self.pending += 1
        self.idle.clear()
        if self.pending >= self.sim.settings.max_pending_receipts:
            self._has_room.clear()
        self._inbox.put_nowait((event.due, next(self._order), routes, event))

    async def run(self, session: aiohttp.ClientSession, families: Sequence[ProviderRoutes]) -> None:
        """Schedule and post until cancelled; a crashed worker stops them all."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._schedule(), name="sim-receipt-scheduler")
            for routes in families:
                if not routes.posts_receipts:
                    continue
                self._ready[routes.family] = asyncio.Queue()
                for n in range(self.sim.settings.post_workers):
                    group.create_task(
                        self._worker(session, routes), name=f"sim-receipts-{routes.family}-{n}"
                    )

    async def _schedule(self) -> None:
        heap: list[tuple[float, int, ProviderRoutes, SimEvent]] = []
        loop = asyncio.get_running_loop()
        while True:
            wait = max(0.0, heap[0][0] - loop.time()) if heap else None
            with suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    heapq.heappush(heap, await self._inbox.get())
            while not self._inbox.empty():
                heapq.heappush(heap, self._inbox.get_nowait())
            now = loop.time()
            while heap and heap[0][0] <= now:
                _, _, routes, event = heapq.heappop(heap)
                self._ready[routes.family].put_nowait(event)

    async def _worker(self, session: aiohttp.ClientSession, routes: ProviderRoutes) -> None:
        ready = self._ready[routes.family]
        while True:
            batch = [await ready.get()]
            while len(batch) < routes.receipts_per_post and not ready.empty():
                batch.append(ready.get_nowait())
            post = routes.render(batch)
            posted = None if post is None else await self._post(session, post)
            self.pending -= len(batch)
            self._done(batch, posted)
            if self.pending < self.sim.settings.max_pending_receipts:
                self._has_room.set()
            if not self.pending:
                self.idle.set()

    async def _post(self, session: aiohttp.ClientSession, post: Post) -> bool:
        attempts = self.sim.settings.post_attempts
        for attempt in range(attempts):
            try:
                async with session.post(post.url, data=post.body, headers=post.headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        return True
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("receipt post failed: %s", exc)
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * 2**attempt)
        return False

    def _done(self, events: Sequence[SimEvent], posted: bool | None) -> None:
        if posted:
            self.sim.stats.receipts_posted += len(events)
        elif posted is not None:  # None: nothing was to be posted
            self.sim.stats.receipts_dropped += len(events)
        for event in events:
            if event.posted is not None:
                event.posted.set()
