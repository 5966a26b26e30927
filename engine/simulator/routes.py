"""One provider as the simulator plays it: the base class of every simulated family.

A family (one module in :mod:`engine.simulator.families`) declares its endpoints, how it
authenticates, parses and answers sends, and renders receipts in its provider's format;
the shared machinery (:class:`engine.simulator.core.Simulator`) does the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from aiohttp import web

from engine.simulator.model import Post, Rejection, SendItem, SimEvent, SimMessage

if TYPE_CHECKING:
    from engine.simulator.core import Simulator


class ProviderRoutes(ABC):
    """One provider as the simulator plays it: its routes, formats and receipts."""

    #: the family's name in SimulatorSettings.families and /sim/inbound/{family}
    family: ClassVar[str]
    #: receipts one webhook call may carry (1 where the format has one per call)
    receipts_per_post: ClassVar[int] = 1
    #: keep accepted messages for the provider's status lookup
    keeps_messages: ClassVar[bool] = False
    #: the provider deduplicates on a key we send (``SendItem.reference``): a repeat is
    #: answered with the first message and not sent again
    dedupes_references: ClassVar[bool] = False
    #: each send request names its own receipt URL (``SendItem.callback``), so receipts
    #: are posted without a ``webhook_url`` (which, if set, serves requests naming none)
    callback_per_request: ClassVar[bool] = False

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.settings = sim.settings.family(self.family)

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The provider's endpoints (sends use ``send_single`` / ``send_bulk``)."""

    @abstractmethod
    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries acceptable credentials."""

    @abstractmethod
    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """The messages in a send request; raise BadRequest for a wrong shape."""

    @abstractmethod
    def blocked(self, item: SendItem) -> Rejection:
        """The rejection for a number the simulator always rejects."""

    @abstractmethod
    def error(self, status: int, code: str, detail: str) -> web.Response:
        """An error response in the provider's format."""

    @abstractmethod
    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """The answer to a send request."""

    @abstractmethod
    def render(self, events: Sequence[SimEvent]) -> Post | None:
        """The webhook call that reports these events (at most ``receipts_per_post``), or
        None where the provider reports nothing for them."""

    def new_id(self, serial: int) -> str:
        """The provider's id for an accepted message."""
        return str(serial)

    @property
    def posts_receipts(self) -> bool:
        """Whether this family posts receipts at all."""
        return self.settings.webhook_url is not None or self.callback_per_request

    async def send_single(self, request: web.Request) -> web.Response:
        """The single-message send endpoint."""
        return await self.sim.handle_send(self, request, bulk=False)

    async def send_bulk(self, request: web.Request) -> web.Response:
        """The bulk send endpoint."""
        return await self.sim.handle_send(self, request, bulk=True)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
