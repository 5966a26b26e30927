"""Provider adapters, one module per provider, and their registry.

The registry: :data:`ADAPTERS` maps each account ``type`` to its adapter class,
:data:`ACCOUNT_TYPES` to its account model, and :data:`AnyAccount` is the tagged union of
every account model, so the config validates an account block against its own type's
keys. :func:`adapter_for` builds the adapter for a configured account.
Adding a provider is one module plus one line in each tuple below (and, to simulate it, one
family in ``engine.simulator.families``); nothing else names it. What differs by provider
outside this package is asked of the account model (e.g. ``webhook_needs_secret``), never
of its type name.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import aiohttp
from pydantic import Field

from engine.providers.base import AccountBase, Adapter
from engine.providers.courier import CourierAccount, CourierAdapter
from engine.providers.simulator import SimulatorAccount, SimulatorAdapter
from engine.providers.sunshine import SunshineAccount, SunshineAdapter
from engine.providers.zenvia import ZenviaAccount, ZenviaAdapter
from engine.providers.zingle import ZingleAccount, ZingleAdapter
from engine.providers.zoomconnect import ZoomConnectAccount, ZoomConnectAdapter

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


def default_accounts() -> dict[str, AnyAccount]:
    """The accounts of an engine with no engine.yaml: one local simulator account."""
    return {"simulator": SimulatorAccount()}


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
    "AnyAccount",
    "CourierAccount",
    "SimulatorAccount",
    "SunshineAccount",
    "ZenviaAccount",
    "ZingleAccount",
    "ZoomConnectAccount",
    "adapter_for",
    "default_accounts",
]
