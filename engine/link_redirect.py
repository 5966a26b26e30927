"""``GET /l/{code}`` (and ``HEAD``): the tracked link's redirect, and its click buffer.

The redirect answers ``302`` to the link's target as soon as it knows the target: one
indexed lookup (``link_target``, skipped for codes seen recently, which are cached), never
a write. ``404`` for a code that does not exist (or is not even shaped like one, without a
lookup). The click goes into :class:`ClickWriter`'s in-memory buffer, which a background
task writes in batches (one ``INSERT ... unnest`` per batch) every :data:`FLUSH_EVERY`
seconds: a click is in ``link_clicks`` within about a second, and a burst of clicks, or a
database slow to take them, never holds up a redirect. A write that fails keeps its clicks
for the next try; past :data:`BUFFER_LIMIT` clicks waiting, new ones are dropped and
counted (``dropped``) rather than letting memory grow. Stopping flushes what is left.

A request whose user agent is a known link-preview bot (engine.links.BOT_AGENTS: chat
apps and social networks unfurling the link) gets the same redirect and is recorded with
``agent = 'bot'``: the reports count those apart, never as clicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from engine.links import agent_class
from engine.queries import QUERIES

log = logging.getLogger(__name__)

#: seconds between writes of the click buffer
FLUSH_EVERY = 0.5
#: clicks kept waiting for the database at most
BUFFER_LIMIT = 200_000
#: targets of recently used codes kept in memory
CACHE_SIZE = 50_000

_CODE = re.compile(r"[0-9A-Za-z]{7,16}")

Click = tuple[str, int, int | None, datetime, str]


class ClickWriter:
    """Clicks buffered in memory and written in batches by a background task."""

    def __init__(self, pool: asyncpg.Pool, *, every: float = FLUSH_EVERY) -> None:
        self.pool = pool
        self.every = every
        self.buffer: list[Click] = []
        self.written = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def record(self, code: str, run_id: int, message_id: int | None, agent: str) -> None:
        """Keep one click for the next batch (never waits)."""
        if len(self.buffer) >= BUFFER_LIMIT:
            self.dropped += 1
            return
        self.buffer.append((code, run_id, message_id, datetime.now(UTC), agent))

    async def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._loop(), name="click-writer")

    async def stop(self) -> None:
        """Stop the writer after writing every buffered click it can."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every)
            await self.flush()

    async def flush(self) -> int:
        """Write the buffered clicks in one statement; return how many were written."""
        batch, self.buffer = self.buffer, []
        if not batch:
            return 0
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(QUERIES["insert_clicks"], *map(list, zip(*batch, strict=True)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot write %d clicks yet: %s", len(batch), exc)
            self.buffer[:0] = batch[: max(0, BUFFER_LIMIT - len(self.buffer))]
            return 0
        self.written += len(batch)
        return len(batch)


class LinkRedirect:
    """The ``/l/{code}`` route of the daemon's listener."""

    def __init__(self, pool: asyncpg.Pool, clicks: ClickWriter) -> None:
        self.pool = pool
        self.clicks = clicks
        self.cache: dict[str, tuple[str, int, int | None]] = {}
        self.answered: Counter[tuple[str, str]] = Counter()  # (302 or 404, agent) -> requests

    @classmethod
    async def open(
        cls, stack: AsyncExitStack, pool: asyncpg.Pool, registry: CollectorRegistry
    ) -> LinkRedirect:
        """The daemon's redirect: its click writer started (and, on the way out, stopped
        after the listener closed, flushing every click), its metrics registered."""
        clicks = ClickWriter(pool)
        await clicks.start()
        stack.push_async_callback(clicks.stop)
        redirect = cls(pool, clicks)
        registry.register(redirect.collector())
        return redirect

    def routes(self) -> list[web.RouteDef]:
        """``GET /l/{code}``; aiohttp answers ``HEAD`` with the same handler."""
        return [web.get("/l/{code}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        """302 to the target (the click recorded later), or 404."""
        code = request.match_info["code"]
        found = self.cache.get(code)
        if found is None and _CODE.fullmatch(code):
            found = await self._lookup(code)
        agent = agent_class(request.headers.get("User-Agent"))
        if found is None:
            self.answered["404", agent] += 1
            return web.Response(status=404, text="no such link\n")
        self.answered["302", agent] += 1
        url, run_id, message_id = found
        self.clicks.record(code, run_id, message_id, agent)
        return web.Response(
            status=302,
            headers={
                "Location": url,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    def collector(self) -> Collector:
        """Prometheus metrics of the redirect and its click buffer, read at each scrape."""
        return _LinkCollector(self)

    async def _lookup(self, code: str) -> tuple[str, int, int | None] | None:
        async with self.pool.acquire() as conn:
            row: Any = await conn.fetchrow(QUERIES["link_target"], code)
        if row is None:
            return None
        found = (row["url"], int(row["run_id"]), row["message_id"])
        if len(self.cache) >= CACHE_SIZE:
            self.cache.clear()
        self.cache[code] = found
        return found


class _LinkCollector(Collector):
    """``engine_link_redirects`` by answer and agent; the click buffer's counters."""

    def __init__(self, redirect: LinkRedirect) -> None:
        self.redirect = redirect

    def collect(self) -> Iterator[Metric]:
        answered = CounterMetricFamily(
            "engine_link_redirects",
            "Requests of /l/{code} by answer (302, 404) and agent (human, bot)",
            labels=["status", "agent"],
        )
        for (status, agent), count in sorted(self.redirect.answered.items()):
            answered.add_metric([status, agent], count)
        yield answered
        clicks = self.redirect.clicks
        yield CounterMetricFamily(
            "engine_link_clicks_written", "Clicks written to link_clicks", value=clicks.written
        )
        yield CounterMetricFamily(
            "engine_link_clicks_dropped",
            "Clicks dropped: the buffer was full",
            value=clicks.dropped,
        )
        yield GaugeMetricFamily(
            "engine_link_clicks_buffered", "Clicks waiting to be written", value=len(clicks.buffer)
        )
