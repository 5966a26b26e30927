"""The simulator of every provider: one aiohttp app that plays each at its documented paths.

It plays each provider with its authentication, validation, error shapes and receipts, for
the demo, the tests and the benchmarks. The parts, one module each:

* :mod:`~engine.simulator.settings`: how each family behaves (faults, rejections, receipts)
* :mod:`~engine.simulator.model`: the values passed around, and the counters (:class:`Stats`,
  ``GET /sim/stats``)
* :mod:`~engine.simulator.routes`: :class:`ProviderRoutes`, the base of each family
* :mod:`~engine.simulator.families`: one module per provider, and the registry
  ``ROUTE_FAMILIES`` of every family the simulator plays
* :mod:`~engine.simulator.core`: the shared machinery that accepts, rejects and decides
  each message's fate; :mod:`~engine.simulator.faults` injects latency, 429, 500 and
  hanging requests
* :mod:`~engine.simulator.poster`: posts receipts from a background task, rendered by each
  family in its provider's format
* :mod:`~engine.simulator.accounts`: ``POST /_sim/credentials`` expires a family's
  credentials (401) or empties its credit (402) mid-run
* :mod:`~engine.simulator.server`: the app, ``POST /sim/inbound/{family}`` (a family posts
  a reply to its webhook, for opt-out tests) and :func:`serve`

The simulator imports the adapters' vocabulary (paths, status tables) where it must agree
with them; no adapter imports the simulator.
"""

from __future__ import annotations

from engine.simulator.model import Stats
from engine.simulator.server import FAMILIES, RunningSimulator, build_app, serve
from engine.simulator.settings import FamilySettings, SimulatorSettings

__all__ = [
    "FAMILIES",
    "FamilySettings",
    "RunningSimulator",
    "SimulatorSettings",
    "Stats",
    "build_app",
    "serve",
]
