"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from engine.simulator import RunningSimulator, SimulatorSettings, serve
from tests.integration.helpers import Receiver


@pytest.fixture
async def start_simulator() -> AsyncIterator[
    Callable[[SimulatorSettings], Awaitable[RunningSimulator]]
]:
    """``await start_simulator(settings)``: a simulator on a free local port, closed after
    the test."""
    running: list[RunningSimulator] = []

    async def start(settings: SimulatorSettings) -> RunningSimulator:
        sim = await serve(settings, "127.0.0.1", 0)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        await sim.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free local port (``receiver.url``)."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/{name}", found.handle)
    app.router.add_post("/webhooks/{name}/{secret:.*}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    found.url = f"http://{host}:{port}"
    yield found
    await runner.cleanup()
