"""Provider adapters, one module per provider, and the simulator of all of them.

The registry: :data:`ADAPTERS` maps each account ``type`` to its adapter class,
:data:`ACCOUNT_TYPES` to its account model, and :data:`AnyAccount` is the tagged union of
every account model, so the config validates an account block against its own type's
keys. :func:`adapter_for` builds the adapter for a configured account.
:data:`ROUTE_FAMILIES` lists every provider the simulator plays. Adding a provider is one
module plus one line in each tuple below; nothing else names it.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import aiohttp
from pydantic import Field

from engine.providers.base import AccountBase, Adapter
from engine.providers.courier import CourierAccount, CourierAdapter
from engine.providers.courier_sim import CourierRoutes
from engine.providers.simulator import (
    ProviderRoutes,
    SimulatorAccount,
    SimulatorAdapter,
    SimulatorRoutes,
)
from engine.providers.sunshine import SunshineAccount, SunshineAdapter
from engine.providers.sunshine_sim import SunshineRoutes
from engine.providers.zenvia import ZenviaAccount, ZenviaAdapter
from engine.providers.zenvia_sim import ZenviaRoutes
from engine.providers.zingle import ZingleAccount, ZingleAdapter
from engine.providers.zingle_sim import ZingleRoutes
from engine.providers.zoomconnect import ZoomConnectAccount, ZoomConnectAdapter
from engine.providers.zoomconnect_sim import ZoomConnectRoutes

_ADAPTER_CLASSES: tuple[type[Adapter[Any]], ...] = (
    SimulatorAdapter,
    ZoomConnectAdapter,
    ZingleAdapter,
    SunshineAdapter,
    ZenviaAdapter,
    CourierAdapter,
)

ADAPTERS: dict[str, type[Adapter[Any]]] = {
    cls.account_model.model_fields["type"].default: cls for cls in _ADAPTER_CLASSES
}

ACCOUNT_TYPES: dict[str, type[AccountBase]] = {
    name: cls.account_model for name, cls in ADAPTERS.items()
}

AnyAccount = Annotated[
    Union[  # noqa: UP007
        SimulatorAccount,
        ZoomConnectAccount,
        ZingleAccount,
        SunshineAccount,
        ZenviaAccount,
        CourierAccount,
    ],
    Field(discriminator="type"),
]

ROUTE_FAMILIES: tuple[type[ProviderRoutes], ...] = (
    SimulatorRoutes,
    ZoomConnectRoutes,
    ZingleRoutes,
    SunshineRoutes,
    ZenviaRoutes,
    CourierRoutes,
)


def adapter_for(
    name: str,
    account: AccountBase,
    session: aiohttp.ClientSession,
    public_url: str | None = None,
) -> Adapter[Any]:
    """The adapter for the configured account called ``name``.

    ``public_url`` is engine.yaml's ``webhooks.public_url``: providers that take a callback
    URL with each message (courier) build it from this.
    """
    adapter = ADAPTERS[account.type](name, account, session)
    adapter.public_url = public_url
    return adapter


__all__ = [
    "ACCOUNT_TYPES",
    "ADAPTERS",
    "ROUTE_FAMILIES",
    "AnyAccount",
    "CourierAccount",
    "SimulatorAccount",
    "SunshineAccount",
    "ZenviaAccount",
    "ZingleAccount",
    "ZoomConnectAccount",
    "adapter_for",
]
