"""The simulator as an aiohttp app: every registered family's routes plus the simulator's own.

``GET /sim/stats`` answers the counters; ``POST /sim/inbound/{family}`` queues a reply;
:func:`serve` starts it on a port and returns a :class:`RunningSimulator`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from engine.simulator import accounts
from engine.simulator.core import Simulator
from engine.simulator.families import ROUTE_FAMILIES
from engine.simulator.model import Stats
from engine.simulator.routes import ProviderRoutes, json_response
from engine.simulator.settings import SimulatorSettings

log = logging.getLogger(__name__)

SIMULATOR = web.AppKey("simulator", Simulator)
STATS = web.AppKey("stats", Stats)
FAMILIES = web.AppKey("families", dict[str, ProviderRoutes])


def build_app(
    settings: SimulatorSettings, families: Sequence[type[ProviderRoutes]] | None = None
) -> web.Application:
    """The simulator as an aiohttp app (every registered provider family by default)."""
    if families is None:
        families = ROUTE_FAMILIES
    sim = Simulator(settings)
    app = web.Application()
    app[SIMULATOR] = sim
    app[STATS] = sim.stats
    app[FAMILIES] = {cls.family: cls(sim) for cls in families}
    owners = {
        route.resource: routes
        for routes in app[FAMILIES].values()
        for route in app.router.add_routes(routes.routes())
        if route.resource
    }
    accounts.install(app, owners, sim.stats)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/inbound/{family}", _inbound_route)
    app.on_shutdown.append(_release_hanging)
    app.cleanup_ctx.append(_receipts)
    return app


async def _stats(request: web.Request) -> web.Response:
    numbers = request.query.get("numbers", "1") not in ("0", "false", "no")
    return json_response(request.app[STATS].as_dict(numbers))


async def _inbound_route(request: web.Request) -> web.Response:
    routes = request.app[FAMILIES].get(request.match_info["family"])
    if routes is None or routes.settings.webhook_url is None:
        return json_response({"error": "unknown family, or it has no webhook_url"}, 404)
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not data.get("from") or not data.get("text"):
        return json_response({"error": "expected {from, text, in_reply_to?}"}, 400)
    request.app[SIMULATOR].inbound(routes, {k: str(v) for k, v in data.items() if v is not None})
    return json_response({"queued": True}, 202)


async def _release_hanging(app: web.Application) -> None:
    app[SIMULATOR].stopping.set()
    app[SIMULATOR].poster.release()


async def _receipts(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    timeout = aiohttp.ClientTimeout(total=sim.settings.post_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sim.clicker.session = session
        task = asyncio.create_task(
            sim.poster.run(session, list(app[FAMILIES].values())), name="sim-receipts"
        )
        yield
        task.cancel()
        await sim.clicker.close()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator receipt poster failed", exc_info=task.exception())


@dataclass(slots=True)
class RunningSimulator:
    """A simulator listening on a port; ``async with`` it or call ``close``."""

    runner: web.AppRunner
    url: str

    @property
    def app(self) -> web.Application:
        """The aiohttp application."""
        return self.runner.app

    @property
    def stats(self) -> Stats:
        """Live counters."""
        return self.runner.app[STATS]

    async def receipts_done(self) -> None:
        """Wait until every queued receipt was posted (or dropped)."""
        await self.runner.app[SIMULATOR].poster.idle.wait()

    async def close(self) -> None:
        """Stop listening, release hanging requests, stop posting receipts."""
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(
    settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8090
) -> RunningSimulator:
    """Start the simulator on ``host:port`` (0 picks a free port) and return it running."""
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return RunningSimulator(runner, f"http://{bound_host}:{bound_port}")
