"""Zenvia as the engine's simulator plays it (see :mod:`engine.providers.zenvia`).

The send and subscription endpoints, strict where Zenvia would refuse: ``X-API-TOKEN``
(401 ``AUTHENTICATION_ERROR`` with the seed's message), the body's shape and required
fields (400 ``VALIDATION_ERROR``), unknown channels and paths under ``/v2/channels`` and
``/v2/subscriptions`` (404 ``NOT_FOUND``), each in Zenvia's ``{code, message, details}``.
Injected 500s are Zenvia's ``INTERNAL_ERROR`` with nothing taken (the one error the seed
marks retryable); ``gateway_errors`` answers a taken message 502/503/504, the case a
client must not resend. MESSAGE_STATUS and MESSAGE events go to the family's
``webhook_url`` with ``X-Webhook-Secret``. Where the seed leaves the shape open, each
event picks at random: the failure's cause as ``causes[]`` (the spec) or the older
singular ``cause`` (the Node SDK), and the deprecated top-level ``messageId`` and
``contentIndex`` present or not.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

#: the channels with a send path (providers.md §2)
CHANNELS = frozenset(
    {"sms", "whatsapp", "facebook", "instagram", "telegram", "gbm", "rcs", "email", "voice"}
)
_DIGITS = re.compile(r"^[1-9]\d{7,14}$")
_SIM_STATUS = {
    "sent": "SENT",
    "delivered": "DELIVERED",
    "undelivered": "NOT_DELIVERED",
    "failed": "REJECTED",
}
_SIM_CAUSES = {
    "undelivered": {
        "channelErrorCode": "005",
        "reason": "ABSENT_SUBSCRIBER",
        "details": "The handset was unreachable",
    },
    "failed": {
        "channelErrorCode": "011",
        "reason": "REJECTED_BY_CARRIER",
        "details": "The carrier refused the message",
    },
}
#: the shared machinery's error codes, as Zenvia spells them (429's code is a guess)
_ERROR_CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_ERROR",
    404: "NOT_FOUND",
    409: "DUPLICATED",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
}
#: the messages of the seed's error table
_SEED_MESSAGES = {
    "VALIDATION_ERROR": "Validation error",
    "AUTHENTICATION_ERROR": "No authorization token was found",
    "NOT_FOUND": "Not found",
    "DUPLICATED": "Entity already exists",
    "INTERNAL_ERROR": "Internal error",
}
_SUBSCRIPTION_EVENTS = frozenset(
    {
        "MESSAGE",
        "MESSAGE_STATUS",
        "CONVERSATION_MESSAGE",
        "CONVERSATION_STATUS",
        "SUPPORT_EXPERT_AGENT",
        "CONTACT",
    }
)


class ZenviaRoutes(ProviderRoutes):
    """Zenvia's send and subscription endpoints, with MESSAGE_STATUS and MESSAGE events."""

    family = "zenvia"
    #: fraction of sends taken, then answered 502, 503 or 504 by "a gateway" (the case a
    #: client must not resend)
    gateway_errors: float = 0.0

    def routes(self) -> list[web.RouteDef]:
        """The documented paths under ``https://api.zenvia.com``."""
        return [
            web.post("/v2/channels/{channel}/messages", self._send),
            web.post("/v2/subscriptions", self._subscribe),
            web.get("/v2/subscriptions", self._subscriptions),
            web.route("*", "/v2/channels/{tail:.*}", self._not_found),
            web.route("*", "/v2/subscriptions{tail:.*}", self._not_found),
        ]

    async def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, "NOT_FOUND", "Not found")

    async def _subscriptions(self, request: web.Request) -> web.Response:
        """The seed's list of subscriptions (the engine's ``providers check`` reads it)."""
        if not self.authorized(request):
            return self.error(401, "AUTHENTICATION_ERROR", "No authorization token was found")
        return json_response([])

    def authorized(self, request: web.Request) -> bool:
        """``X-API-TOKEN`` (any, or the required one)."""
        token, wanted = request.headers.get("X-API-TOKEN"), self.settings.require_token
        return bool(token) and (wanted is None or token == wanted)

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """``{from, to, contents: [{type: text, text}], externalId}``."""
        data = _json_object(body)
        for name in ("from", "to"):
            value = data.get(name)
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                raise BadRequest("VALIDATION_ERROR", f"{name}: must be 1 to 64 characters")
        contents = data.get("contents")
        if not isinstance(contents, list) or not contents or not all(map(_is_text, contents)):
            raise BadRequest("VALIDATION_ERROR", "contents: expected [{type: text, text}]")
        ref = None if data.get("externalId") is None else str(data["externalId"])
        if not _DIGITS.match(data["to"]):
            return [
                SendItem(
                    data["to"],
                    "",
                    ref,
                    Rejection(
                        "VALIDATION_ERROR", "to: the number with its country code, digits only"
                    ),
                )
            ]
        return [SendItem(data["to"], "\n".join(c["text"] for c in contents), ref)]

    def blocked(self, item: SendItem) -> Rejection:
        """A validation error, as for a number Zenvia will not send to [G]."""
        return Rejection("VALIDATION_ERROR", "to: the number does not accept messages")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """``{code, message, details}``, with the seed's message for its documented codes."""
        zenvia_code = code if code.isupper() else _ERROR_CODES.get(status, "INTERNAL_ERROR")
        message = _SEED_MESSAGES.get(zenvia_code) if not code.isupper() else None
        return json_response(
            {"code": zenvia_code, "message": message or detail, "details": []}, status
        )

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """200 with the message echoed; a refused message is a 400."""
        (outcome,) = outcomes
        if isinstance(outcome, Rejection):
            return self.error(400, outcome.code, outcome.detail)
        return json_response(
            {
                "id": outcome.id,
                "externalId": outcome.reference,
                "to": outcome.to,
                "direction": "OUT",
                "contents": [{"type": "text", "text": outcome.body}],
                "timestamp": _zulu(datetime.now(UTC)),
            }
        )

    def new_id(self, serial: int) -> str:
        """A UUID, as Zenvia's ids are."""
        return str(uuid.UUID(int=serial))

    def render(self, events: Sequence[SimEvent]) -> Post:
        """One JSON event per call to ``webhook_url``, with ``X-Webhook-Secret``."""
        (event,) = events
        assert self.settings.webhook_url is not None
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Webhook-Secret"] = self.settings.webhook_secret
        if event.kind == "inbound":
            body = _inbound_event(event)
        else:  # the seed leaves open which shape of the cause Zenvia sends: either, at random
            body = _status_event(
                event,
                singular_cause=self.sim.rng.random() < 0.5,
                deprecated_ids=self.sim.rng.random() < 0.5,
            )
        return Post(self.settings.webhook_url, headers, orjson.dumps(body))

    async def _send(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel not in CHANNELS:
            return self.error(404, "NOT_FOUND", f"channel {channel!r} not found")
        response = await self.send_single(request)
        if response.status != 200 or not isinstance(response.body, bytes):
            return response
        if self.sim.rng.random() < self.gateway_errors:
            status = self.sim.rng.choice((502, 503, 504))
            return web.Response(
                status=status,
                text=f"<html>{status} from the gateway</html>",
                content_type="text/html",
            )
        sent = orjson.loads(await request.read())  # valid: it was accepted
        return json_response(
            {**orjson.loads(response.body), "from": sent["from"], "channel": channel}
        )

    async def _subscribe(self, request: web.Request) -> web.Response:
        """Checks the subscription's shape and echoes it with an id (events go to the
        family's ``webhook_url``, whatever URL the subscription names)."""
        if not self.authorized(request):
            return self.error(401, "AUTHENTICATION_ERROR", "No authorization token was found")
        try:
            data = _json_object(await request.read())
        except BadRequest as exc:
            return self.error(400, exc.code, exc.detail)
        webhook, criteria = data.get("webhook"), data.get("criteria")
        if data.get("eventType") not in _SUBSCRIPTION_EVENTS:
            return self.error(400, "VALIDATION_ERROR", "eventType: unknown event type")
        if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
            return self.error(400, "VALIDATION_ERROR", "webhook.url: required")
        if not isinstance(criteria, dict) or not isinstance(criteria.get("channel"), str):
            return self.error(400, "VALIDATION_ERROR", "criteria.channel: required")
        now = _zulu(datetime.now(UTC))
        return json_response(
            {
                "id": str(uuid.uuid4()),
                "status": "ACTIVE",
                **data,
                "createdAt": now,
                "updatedAt": now,
            }
        )


def _status_event(
    event: SimEvent, *, singular_cause: bool = False, deprecated_ids: bool = True
) -> dict[str, Any]:
    """A MESSAGE_STATUS event: the failure's cause as the spec's ``causes[]`` or the Node
    SDK's older singular ``cause``; the deprecated top-level ``messageId`` and
    ``contentIndex`` present or not."""
    msg = event.message
    assert msg is not None
    at = _zulu(event.at)
    status: dict[str, Any] = {
        "timestamp": at,
        "code": _SIM_STATUS[event.kind],
        "description": event.kind,
        "channel": "sms",
        "direction": "OUT",
    }
    if event.kind in _SIM_CAUSES:
        cause = _SIM_CAUSES[event.kind]
        if singular_cause:
            status["cause"] = cause["channelErrorCode"]
        else:
            status["causes"] = [cause]
    body: dict[str, Any] = {
        "id": event.id,
        "timestamp": at,
        "type": "MESSAGE_STATUS",
        "subscriptionId": "sim",
        "channel": "sms",
        "message": {
            "id": msg.id,
            "externalId": msg.reference,
            "contentIndex": 0,
            "direction": "OUT",
            "to": msg.to,
        },
        "messageStatus": status,
    }
    if deprecated_ids:
        body.update(messageId=msg.id, contentIndex=0)
    return body


def _inbound_event(event: SimEvent) -> dict[str, Any]:
    at = _zulu(event.at)
    return {
        "id": event.id,
        "timestamp": at,
        "type": "MESSAGE",
        "subscriptionId": "sim",
        "channel": "sms",
        "direction": "IN",
        "message": {
            "id": event.id,
            "from": event.extra.get("from", "").lstrip("+"),
            "to": "simulator",
            "direction": "IN",
            "channel": "sms",
            "contents": [{"type": "text", "text": event.extra.get("text", "")}],
            "timestamp": at,
        },
    }


def _is_text(content: Any) -> bool:
    return (
        isinstance(content, dict)
        and content.get("type") == "text"
        and isinstance(content.get("text"), str)
        and bool(content["text"])
    )


def _zulu(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("VALIDATION_ERROR", "body: not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("VALIDATION_ERROR", "body: expected a JSON object")
    return data
