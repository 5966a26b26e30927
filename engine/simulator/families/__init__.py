"""Every provider the simulator plays, one module each, and their registry.

Adding a provider to the simulator is one module here plus one line in :data:`ROUTE_FAMILIES`.
"""

from __future__ import annotations

from engine.simulator.families.courier import CourierRoutes
from engine.simulator.families.simulator import SimulatorRoutes
from engine.simulator.families.sunshine import SunshineRoutes
from engine.simulator.families.zenvia import ZenviaRoutes
from engine.simulator.families.zingle import ZingleRoutes
from engine.simulator.families.zoomconnect import ZoomConnectRoutes
from engine.simulator.routes import ProviderRoutes

ROUTE_FAMILIES: tuple[type[ProviderRoutes], ...] = (
    SimulatorRoutes,
    ZoomConnectRoutes,
    ZingleRoutes,
    SunshineRoutes,
    ZenviaRoutes,
    CourierRoutes,
)

__all__ = [
    "ROUTE_FAMILIES",
    "CourierRoutes",
    "SimulatorRoutes",
    "SunshineRoutes",
    "ZenviaRoutes",
    "ZingleRoutes",
    "ZoomConnectRoutes",
]
