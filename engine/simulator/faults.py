"""Fault injection: the latency, 429, 500 and hanging answers a family's settings ask for."""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress
from enum import Enum

from engine.simulator.model import Stats
from engine.simulator.settings import FamilySettings


class Fault(Enum):
    """What goes wrong with one request."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


async def draw(settings: FamilySettings, rng: random.Random, stats: Stats) -> Fault | None:
    """Wait the family's latency, then pick this request's fault (counted), if any."""
    low, high = settings.latency
    if high > 0:
        await asyncio.sleep(rng.uniform(low, high))
    draw = rng.random()
    for fault, fraction, counter in (
        (Fault.RATE_LIMITED, settings.rate_limited, "rate_limited"),
        (Fault.SERVER_ERROR, settings.server_errors, "server_errors"),
        (Fault.TIMEOUT, settings.timeouts, "timeouts"),
    ):
        if draw < fraction:
            setattr(stats, counter, getattr(stats, counter) + 1)
            return fault
        draw -= fraction
    return None


async def hang(seconds: float, stopping: asyncio.Event) -> None:
    """Answer late; shutting down (``stopping``) ends the wait."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
