"""``engine run``: one process composing the scheduler, expander, dispatcher and webhooks.

Roles (``--only``) split the work for deployments that want to: ``scheduler`` (due runs
and expansion), ``dispatcher`` (sending, lease recovery), ``webhooks`` (the HTTP listener
for provider callbacks, plus polling and the reconciler that applies receipts). Every
daemon serves ``/healthz`` and ``/metrics`` when it runs the ``webhooks`` role. ``/healthz``
lists paused accounts (engine.accounts) under ``accounts_down`` and still answers 200: the
daemon is alive and serving; an account's credentials are the operator's to fix, and a
restart would not help (``engine_account_up`` is the metric to alert on).

Everything opens and closes in one :class:`contextlib.AsyncExitStack`. Timed work runs
as APScheduler jobs (coalesced, one instance each): the due-run tick, the reconciler,
polling, lease recovery, run completion, heartbeats and the metrics refresh. The
dispatcher's loop and the expansion run as tasks that are watched: if one dies, the
daemon stops rather than limp on. Work arrives by ``NOTIFY engine`` (new runs to send,
control commands) as well as by polling.

Shutdown (:meth:`Daemon.run` returns when ``stop`` is set): stop the timers and
expansion (an interrupted batch rolls back; its checkpoint stays), give in-flight sends
``shutdown_grace`` (what is still in flight then becomes ``unknown``; what never started
goes back to the queue), stop accepting webhooks and flush every acknowledged receipt,
mark the worker stopped.

Several daemons share one database: claims use SKIP LOCKED, and each daemon registers in
``workers`` and heartbeats; an account's ``rate`` is divided by the number of live
dispatchers sending for it, so together they never exceed it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine import db, migrate, reports, scheduler, winner
from engine.config import EngineConfig
from engine.dispatcher import Dispatcher
from engine.expander import Expander
from engine.link_redirect import LinkRedirect
from engine.metrics import Metrics
from engine.poller import Poller
from engine.providers import adapter_for
from engine.providers.base import Adapter
from engine.queries import QUERIES
from engine.receipt_writer import ReceiptWriter
from engine.reconciler import Reconciler
from engine.redact import Redactor
from engine.scheduler import complete_runs
from engine.webhooks import WebhookHandler, listener_logger, require_secrets, same_secret

log = logging.getLogger(__name__)

ROLES = frozenset({"scheduler", "dispatcher", "webhooks"})
HEARTBEAT = timedelta(seconds=2)
DEAD_AFTER = timedelta(seconds=10)
#: Seconds between the periodic passes. Each reads an index whose dead entries grow with a
#: running campaign (at N = 1M, 0.2 s for completion and lease recovery, 1.2 s for the
#: gauges that count rows), so they run no more often than their purpose needs: a run is
#: closed within 10 s of its last receipt, a dead dispatcher's leases are recovered within
#: 20 s (or a third of the lease, if shorter) of expiring, and the gauges are 30 s fresh
#: (a scrape never queries).
COMPLETE_EVERY = 10
RECOVER_EVERY = 20
METRICS_EVERY = 30


def worker_id() -> str:
    """A name for this daemon that is unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Daemon:
    """One ``engine run`` process."""

    def __init__(
        self,
        config: EngineConfig,
        url: str,
        roles: frozenset[str] = ROLES,
        *,
        worker: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        unknown = roles - ROLES
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
        self.config = config
        self.url = url
        self.roles = roles
        self.worker = worker or worker_id()
        self.poll_interval = poll_interval
        self.metrics = Metrics()
        self.metrics.watch_accounts(config.providers)
        self.shares: dict[str, float] = {}
        self.dispatcher: Dispatcher | None = None
        self.expander: Expander | None = None
        self.site_url: str | None = None
        self._expansion: asyncio.Task[None] | None = None
        self._failed: asyncio.Future[BaseException] | None = None
        self._pool: asyncpg.Pool | None = None

    # --- life cycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop`` is set (or a part dies), then shut down in order."""
        self._failed = asyncio.get_running_loop().create_future()
        async with AsyncExitStack() as stack:
            await self._open(stack)
            log.info("daemon started", extra={"worker": self.worker, "roles": sorted(self.roles)})
            if ready is not None:
                ready()
            stopped = asyncio.create_task(stop.wait())
            failed: asyncio.Future[Any] = self._failed
            await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            log.info("daemon stopping", extra={"worker": self.worker})
        if self._failed.done():
            raise self._failed.result()

    async def _open(self, stack: AsyncExitStack) -> None:
        if "webhooks" in self.roles:  # a listener that would be open to anyone: say so first
            require_secrets(self.config.providers)
        pool: asyncpg.Pool = await stack.enter_async_context(
            db.pool(self.url, min_size=2, max_size=12)
        )
        self._pool = pool
        async with pool.acquire() as conn:
            await migrate.require_current(conn)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        adapters = {
            name: adapter_for(name, account, session, public_url=self.config.webhooks.public_url)
            for name, account in self.config.providers.items()
        }
        _mask_logs(stack, Redactor.of(adapters.values()))
        await self._register(pool, stack)
        if "webhooks" in self.roles:
            await self._open_webhooks(stack, pool, adapters)
        if "dispatcher" in self.roles:
            self._open_dispatcher(stack, pool, adapters)
        if "scheduler" in self.roles:
            self.expander = Expander(
                pool, self.config, self.worker, balance=_balance_reader(adapters)
            )
            stack.push_async_callback(self._stop_expansion)
        await self._listen(stack)
        self._timers(stack, pool, adapters)

    async def _register(self, pool: asyncpg.Pool, stack: AsyncExitStack) -> None:
        accounts = sorted(self.config.providers) if "dispatcher" in self.roles else []
        async with pool.acquire() as conn:
            await conn.execute(
                QUERIES["register_worker"],
                self.worker,
                socket.gethostname(),
                os.getpid(),
                sorted(self.roles),
                accounts,
            )
        await self._heartbeat()

        async def unregister() -> None:
            async with pool.acquire() as conn:
                await conn.execute(QUERIES["stop_worker"], self.worker)

        stack.push_async_callback(unregister)

    async def _open_webhooks(
        self, stack: AsyncExitStack, pool: asyncpg.Pool, adapters: dict[str, Adapter[Any]]
    ) -> None:
        redact = Redactor.of(adapters.values())
        writer = ReceiptWriter(
            pool,
            opt_out_keywords=self.config.opt_out_keywords,
            opt_in_keywords=self.config.opt_in_keywords,
            help_keywords=self.config.help_keywords,
            redact=redact,
        )
        handler = WebhookHandler(adapters, writer)  # a config error stops start-up here
        await writer.start()
        stack.push_async_callback(writer.stop)  # runs after the listener closed: flush all
        self.metrics.watch_webhooks(handler.stats)
        redirect = await LinkRedirect.open(stack, pool, self.metrics.registry)  # /l/{code}
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/metrics", self._metrics),
                web.get("/reports/{campaign}", self._report),
                *handler.routes(),
                *redirect.routes(),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, logger=listener_logger())
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        listen = self.config.webhooks
        site = web.TCPSite(runner, listen.host, listen.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.site_url = f"http://{host}:{port}"

    def _open_dispatcher(
        self, stack: AsyncExitStack, pool: asyncpg.Pool, adapters: dict[str, Adapter[Any]]
    ) -> None:
        self.dispatcher = Dispatcher(
            pool,
            self.config,
            self.worker,
            adapters,
            poll_interval=self.poll_interval,
            lease=self.config.lease,
            share=lambda account: self.shares.get(account, 1.0),
            metrics=self.metrics,
        )
        task = self._watch(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
        dispatcher = self.dispatcher

        async def stop_dispatcher() -> None:
            await dispatcher.stop(self.config.shutdown_grace)
            await asyncio.gather(task, return_exceptions=True)

        stack.push_async_callback(stop_dispatcher)

    async def _listen(self, stack: AsyncExitStack) -> None:
        conn = await db.connect(self.url)
        stack.push_async_callback(conn.close)

        def notified(_: Any, __: int, channel: str, payload: str) -> None:
            if self.dispatcher is not None:
                self.dispatcher.wake()
            if payload.startswith("tick") and self.expander is not None:
                self._expand_soon()

        await conn.add_listener("engine", notified)

    def _timers(
        self, stack: AsyncExitStack, pool: asyncpg.Pool, adapters: dict[str, Adapter[Any]]
    ) -> None:
        timers = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )

        def every(
            seconds: float, job: Callable[..., Awaitable[Any]], *args: Any, now: bool = False
        ) -> None:
            name = getattr(job, "__name__", "job")
            # next_run_time=None would add the job paused: leave it out unless running now
            first = {"next_run_time": datetime.now(UTC)} if now else {}
            timers.add_job(
                self._guarded(job, *args), "interval", seconds=seconds, id=name, name=name, **first
            )

        every(HEARTBEAT.total_seconds(), self._heartbeat)
        every(METRICS_EVERY, self._refresh_metrics, pool)
        if "scheduler" in self.roles:
            every(1, self._tick, pool, now=True)
            every(1, winner.decide_due, pool)  # its NOTIFY wakes the expander
        if self.dispatcher is not None:
            every(
                min(RECOVER_EVERY, self.config.lease.total_seconds() / 3),
                self.dispatcher.recover_leases,
                now=True,
            )
        if "webhooks" in self.roles:
            reconciler = Reconciler(pool)
            poller = Poller(pool, adapters, window=self.config.receipt_window)
            every(0.5, reconciler.apply_pending)
            every(10, poller.poll_once)
            every(COMPLETE_EVERY, self._complete, pool)
        timers.start()
        stack.callback(timers.shutdown, wait=False)

    # --- the jobs ------------------------------------------------------------------------

    def _guarded(
        self, job: Callable[..., Awaitable[Any]], *args: Any
    ) -> Callable[[], Awaitable[None]]:
        """A job whose failure is logged with its name; the timer tries again next time."""

        async def run() -> None:
            try:
                await job(*args)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s failed: %s", getattr(job, "__name__", job), exc)

        run.__name__ = getattr(job, "__name__", "job")
        return run

    async def _heartbeat(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["heartbeat"], self.worker, DEAD_AFTER)
        shares = {row["account"]: 1.0 / max(1, row["live"]) for row in rows}
        if shares != self.shares:
            log.info("rate shares changed: %s", shares, extra={"worker": self.worker})
        self.shares = shares

    async def _tick(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await scheduler.create_due_runs(conn, datetime.now(UTC), self.config.misfire_grace)
        self._expand_soon()

    def _expand_soon(self) -> None:
        if self._expansion is None or self._expansion.done():
            self._expansion = self._watch(asyncio.create_task(self._expand_all(), name="expansion"))

    async def _expand_all(self) -> None:
        assert self.expander is not None
        try:
            while await self.expander.run_once() is not None:
                pass
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # the database went away mid-run: the checkpoint holds, the next tick resumes
            log.warning("expansion interrupted: %s", exc)

    async def _stop_expansion(self) -> None:
        if self._expansion is not None and not self._expansion.done():
            self._expansion.cancel()
            await asyncio.gather(self._expansion, return_exceptions=True)

    async def _complete(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await complete_runs(conn, self.config.receipt_window)

    async def _refresh_metrics(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await self.metrics.refresh(conn)

    def _watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Stop the daemon if a long-running part dies (it must not limp on without it)."""

        def done(finished: asyncio.Task[Any]) -> None:
            if finished.cancelled() or self._failed is None or self._failed.done():
                return
            exc = finished.exception()
            if exc is not None:
                log.error("%s died", finished.get_name(), exc_info=exc)
                self._failed.set_result(exc)

        task.add_done_callback(done)
        return task

    # --- HTTP ----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        assert self._pool is not None
        try:
            async with asyncio.timeout(2):
                async with self._pool.acquire() as conn:
                    down = [
                        _down(row)
                        for row in await conn.fetch(QUERIES["account_health"])
                        if not row["up"]
                    ]
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return web.json_response(
                {"status": "database unreachable", "error": str(exc)}, status=503
            )
        return web.json_response(
            {
                "status": "ok",
                "worker": self.worker,
                "roles": sorted(self.roles),
                "accounts_down": down,
            }
        )

    async def _report(self, request: web.Request) -> web.Response:
        """The chart page of a campaign: with the reports token (or see ``_may_see_reports``)."""
        if not self._may_see_reports(request):
            return web.json_response({"error": "reports need the reports token"}, status=401)
        assert self._pool is not None
        run = request.query.get("run")
        try:
            async with self._pool.acquire() as conn:
                page = await reports.report_html(
                    conn,
                    request.match_info["campaign"],
                    int(run) if run and run.isdigit() else None,
                )
        except reports.ReportError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.Response(text=page, content_type="text/html")

    def _may_see_reports(self, request: web.Request) -> bool:
        """The token is the rule; loopback peers only where ``reports_public: loopback``.

        The TCP peer is all we trust (never ``X-Forwarded-For``), and behind a reverse
        proxy on the same host every client's peer is the proxy: that is why loopback
        access is an explicit opt-in rather than the default.
        """
        listen = self.config.webhooks
        if listen.reports_public == "loopback" and request.remote in ("127.0.0.1", "::1"):
            return True
        if listen.reports_token is None:
            return False
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query.get("token", "")
        return same_secret(given, listen.reports_token.get_secret_value())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )


def _down(row: asyncpg.Record) -> dict[str, Any]:
    """A paused account in /healthz: the daemon is healthy (still 200), the account is not."""
    return {
        "account": row["account"],
        "reason": row["reason"],
        "detail": row["detail"],
        "since": row["since"].isoformat(),
        "retry_at": row["retry_at"] and row["retry_at"].isoformat(),
    }


def _mask_logs(stack: AsyncExitStack, redact: Redactor) -> None:
    """Mask the accounts' secrets in every log line while the daemon runs (a refused
    webhook's excerpt, a provider's error text)."""
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redact.filter)
        stack.callback(handler.removeFilter, redact.filter)


def _balance_reader(
    adapters: dict[str, Adapter[Any]],
) -> Callable[[str], Awaitable[Decimal | None]]:
    async def balance(account: str) -> Decimal | None:
        adapter = adapters.get(account)
        return None if adapter is None else await adapter.balance()

    return balance
