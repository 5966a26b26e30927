"""The engine's own provider protocol (family ``simulator``), as the simulator serves it.

The protocol is described in :mod:`engine.providers.simulator`, whose adapter is its client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class SimulatorRoutes(ProviderRoutes):
    """The simulator's own protocol (see the module docstring)."""

    family = "simulator"
    receipts_per_post = 100

    def routes(self) -> list[web.RouteDef]:
        """Single and bulk send, and the account (for ``engine providers check``)."""
        return [
            web.post("/sim/v1/messages", self.send_single),
            web.post("/sim/v1/messages/bulk", self.send_bulk),
            web.get("/sim/v1/account", self._account),
        ]

    async def _account(self, request: web.Request) -> web.Response:
        """``{status: active, credit}``, or 401 without the credentials."""
        if not self.authorized(request):
            self.sim.stats.unauthorized += 1
            return self.error(401, "unauthorized", "missing or wrong credentials")
        return json_response({"status": "active", "credit": float(self.sim.credit)})

    def authorized(self, request: web.Request) -> bool:
        """Any request, or a matching bearer token when one is required."""
        token = self.settings.require_token
        return token is None or request.headers.get("Authorization") == f"Bearer {token}"

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """``{to, body, ...}`` or ``{messages: [...]}``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("invalid_json", "body is not JSON") from exc
        if not bulk:
            if not isinstance(data, dict):
                raise BadRequest("invalid_request", "expected an object")
            return [self._item(data)]
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            raise BadRequest("invalid_request", "expected {messages: [objects]}")
        return [self._item(m) for m in messages]

    def _item(self, data: Any) -> SendItem:
        if not isinstance(data, dict):
            return SendItem("", "", None, Rejection("invalid_request", "expected an object"))
        to, text, ref = data.get("to"), data.get("body"), data.get("reference")
        ref = None if ref is None else str(ref)
        if not isinstance(to, str) or not _E164.match(to):
            return SendItem(str(to), "", ref, Rejection("invalid_number", "to must be E.164"))
        if not isinstance(text, str) or not text:
            return SendItem(to, "", ref, Rejection("empty_body", "body must not be empty"))
        return SendItem(to, text, ref)

    def blocked(self, item: SendItem) -> Rejection:
        """``blocked``."""
        return Rejection("blocked", "the number does not accept messages")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """``{error: {code, detail}}``."""
        return json_response({"error": {"code": code, "detail": detail}}, status)

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """``{id}``, a 400 error, or ``{results: [...]}``."""
        if not bulk:
            outcome = outcomes[0]
            if isinstance(outcome, Rejection):
                return self.error(400, outcome.code, outcome.detail)
            return json_response({"id": outcome.id})
        return json_response(
            {
                "results": [
                    {"error": {"code": o.code, "detail": o.detail}}
                    if isinstance(o, Rejection)
                    else {"id": o.id}
                    for o in outcomes
                ]
            }
        )

    def render(self, events: Sequence[SimEvent]) -> Post:
        """Many events per call, JSON, ``X-Webhook-Secret``."""
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Webhook-Secret"] = self.settings.webhook_secret
        assert self.settings.webhook_url is not None
        body = orjson.dumps({"events": [self._event(e) for e in events]})
        return Post(self.settings.webhook_url, headers, body)

    def new_id(self, serial: int) -> str:
        """``sim-<n>``."""
        return f"sim-{serial}"

    @staticmethod
    def _event(event: SimEvent) -> dict[str, Any]:
        at = event.at.isoformat()
        if event.kind == "inbound":
            return {"id": event.id, "type": "inbound", "at": at, **event.extra}
        msg = event.message
        assert msg is not None
        code, detail = _FAILURES.get(event.kind, (None, None))
        return {
            "id": event.id,
            "message_id": msg.id,
            "reference": msg.reference,
            "status": event.kind,
            "code": code,
            "detail": detail,
            "at": at,
        }


_FAILURES = {
    "undelivered": ("absent_subscriber", "the handset was unreachable"),
    "failed": ("network_rejected", "the network refused the message"),
}
