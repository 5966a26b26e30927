"""The simulator's account switch: expire a family's credentials, empty its credit, or take
it down, mid-run.

``POST /_sim/credentials`` ``{"family": "zenvia", "valid": false}`` makes every endpoint of
that provider family answer 401 in the provider's own error shape (as its real API does
for an expired or revoked credential) until ``{"family": ..., "valid": true}`` renews it.
``{"family": ..., "credit": false}`` makes it answer 402 (insufficient credit) the same way
until ``"credit": true``. ``{"family": ..., "up": false}`` is an outage: every endpoint
of the family (its check included) answers 500 in its own error shape, taking nothing,
until ``"up": true`` (routes fail over, and the account's probe brings it back).
:meth:`AccountSwitch.set` is the same from Python (tests), via
``RunningSimulator.app[ACCOUNTS]``. All are off at start; the simulator's own routes
(``/sim/stats``, ``/sim/inbound``, this one) are never switched.

The switch is an aiohttp middleware: it looks up which family registered the matched route,
so no family's handlers need to know about it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from engine.simulator.model import Stats
from engine.simulator.routes import ProviderRoutes, json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class AccountSwitch:
    """Which families' credentials are revoked and which are out of credit."""

    revoked: set[str] = field(default_factory=set)
    no_credit: set[str] = field(default_factory=set)
    outage: set[str] = field(default_factory=set)

    def set(
        self,
        family: str,
        *,
        valid: bool | None = None,
        credit: bool | None = None,
        up: bool | None = None,
    ) -> None:
        """Revoke (``valid=False``) or renew credentials; empty or refill the credit; take
        the family down (``up=False``) or bring it back."""
        for wanted, names in ((valid, self.revoked), (credit, self.no_credit), (up, self.outage)):
            if wanted is False:
                names.add(family)
            elif wanted is True:
                names.discard(family)

    def refusal(self, routes: ProviderRoutes) -> web.Response | None:
        """The provider's 500, 401 or 402 while its family is switched off, else None."""
        if routes.family in self.outage:
            return routes.error(500, "outage", "the provider is down (simulated outage)")
        if routes.family in self.revoked:
            return routes.error(401, "unauthorized", "the credentials expired or were revoked")
        if routes.family in self.no_credit:
            return routes.error(402, "insufficient_credit", "the account has no credit left")
        return None


ACCOUNTS = web.AppKey("accounts", AccountSwitch)
_OWNERS = web.AppKey("route_owners", Mapping[AbstractResource, ProviderRoutes])


def install(
    app: web.Application, owners: Mapping[AbstractResource, ProviderRoutes], stats: Stats
) -> None:
    """Add the switch to a simulator app; ``owners`` maps each family route to its family."""
    app[ACCOUNTS] = AccountSwitch()
    app[_OWNERS] = owners
    app.router.add_post("/_sim/credentials", _control)

    @web.middleware
    async def switch(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        routes = None if resource is None else owners.get(resource)
        refusal = None if routes is None else app[ACCOUNTS].refusal(routes)
        if refusal is None:
            return await handler(request)
        stats.requests += 1
        if refusal.status == 500:
            stats.server_errors += 1
        else:
            stats.unauthorized += 1
        return refusal

    app.middlewares.append(switch)


async def _control(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        data = None
    flags = {k: data.get(k) for k in ("valid", "credit", "up")} if isinstance(data, dict) else {}
    family = data.get("family") if isinstance(data, dict) else None
    known = {routes.family for routes in request.app[_OWNERS].values()}
    if family not in known or not any(isinstance(v, bool) for v in flags.values()):
        return json_response(
            {
                "error": "expected {family, valid?: bool, credit?: bool, up?: bool} for "
                f"one of {sorted(known)}"
            },
            400,
        )
    switch = request.app[ACCOUNTS]
    switch.set(
        str(family),
        valid=_flag(flags["valid"]),
        credit=_flag(flags["credit"]),
        up=_flag(flags["up"]),
    )
    return json_response(
        {
            "family": family,
            "valid": family not in switch.revoked,
            "credit": family not in switch.no_credit,
            "up": family not in switch.outage,
        }
    )


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None
