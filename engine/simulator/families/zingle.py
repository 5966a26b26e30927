"""Zingle as the engine's simulator plays it (see :mod:`engine.providers.zingle`).

The send (deduplicated on ``uuid``), the message lookup, the JWT API and the opt-in
webhook, strict where Zingle would refuse: credentials (Basic, or a Bearer JWT this
simulator issued and that has not expired), ``Content-Type: application/json``, the body's
shape and required fields, and unknown paths under ``/v1/services``, each answered with
Zingle's ``status`` object. JWTs live ``jwt_ttl`` seconds (short by default, so that a
demo or a test renews them); :meth:`ZingleRoutes.expire_credentials` revokes every JWT
issued so far, as an expiry mid-run would. Where the seed leaves a detail open the
simulator picks a variant at random per response or webhook: dates as Unix seconds or
ISO-8601, the JWT's expiry given as ``expires_at``, ``expires_in`` or only in its ``exp``
claim (and the token under ``jwt`` or ``token``), and a US ``contact_phone`` in E.164 or
formatted ("858-555-1001").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from engine.providers.zingle import API
from engine.simulator.core import Simulator
from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SIM_NAMESPACE = uuid.UUID("0b7c9a4e-2d1f-4e8a-9c3b-5a6d7e8f9012")
_SIM_SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"
_SIM_FAILURE = {
    "undelivered": "Carrier reported the handset unreachable",
    "failed": "Carrier rejected the message",
}
#: the simulator's own codes, as Zingle would say them
_SIM_CODES = {"unauthorized": 2601, "internal_error": 2600, "rate_limited": 2600}
_SIM_KEY = b"zingle-simulator-signing-key"
_JWT_PATH = "/v1/auth/jwt"
_BLOCK_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
_UNBLOCK_WORDS = frozenset({"START", "UNSTOP", "OPTIN"})


class ZingleRoutes(ProviderRoutes):
    """Zingle's send (deduplicated on ``uuid``), message lookup and opt-in webhook.

    Zingle posts no delivery receipts: a message's fate shows in its lookup once
    ``receipt_delay`` has passed (``executed_at``; a ``failed`` status for undelivered or
    failed ones). ``POST /sim/inbound/zingle`` ``{from, text}`` with an opt-out (STOP, ...)
    or opt-in (START, ...) keyword posts the block or unblock webhook; other texts post
    nothing, as Zingle has no reply webhook.
    """

    family = "zingle"
    keeps_messages = True
    dedupes_references = True

    #: seconds a JWT from the JWT API is valid
    jwt_ttl: float = 20.0

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self._created: dict[str, float] = {}
        self._generation = 0  # JWTs of an older generation are revoked
        #: requests by kind (``jwt``, ``lookup``, ``expired_jwt``), for tests
        self.counts: Counter[str] = Counter()

    def routes(self) -> list[web.RouteDef]:
        """The documented paths, then Zingle's 404 for any other under /v1/services."""
        return [
            web.post(f"{API}/{{service_id}}/messages", self._send),
            web.get(f"{API}/{{service_id}}/messages/{{message_id}}", self._message),
            web.get(_JWT_PATH, self._jwt),
            web.get(f"{API}/{{service_id}}", self._service),
            web.route("*", f"{API}/{{tail:.*}}", self._not_found),
        ]

    async def _service(self, request: web.Request) -> web.Response:
        """``GET /v1/services/{id}``: the service (the engine's ``providers check``)."""
        if not self.authorized(request):
            self.sim.stats.unauthorized += 1
            return self.error(401, "2601", "Authentication failed")
        return json_response(
            {
                "status": {"status_code": 200, "text": "OK"},
                "result": {"id": request.match_info["service_id"]},
            }
        )

    def expire_credentials(self) -> None:
        """Revoke every JWT issued so far (an expiry mid-run): 401 until one is renewed."""
        self._generation += 1

    def authorized(self, request: web.Request) -> bool:
        """Basic username:password (``require_token`` is the password), or a Bearer JWT
        this simulator issued, unexpired and not revoked."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self._valid_jwt(value.strip())
        if scheme.lower() != "basic":
            return False
        user, secret = _basic(value)
        wanted = self.settings.require_token
        if not user or not secret:
            return False
        return wanted is None or hmac.compare_digest(secret.encode(), wanted.encode())

    def _valid_jwt(self, token: str) -> bool:
        claims = _claims(token)
        if claims is None or claims.get("gen") != self._generation:
            return False
        if float(claims.get("exp", 0)) <= time.time():
            self.counts["expired_jwt"] += 1
            return False
        return True

    async def _jwt(self, request: web.Request) -> web.Response:
        """The JWT API: Basic credentials only; the answer's shape varies [G]."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or not self.authorized(request):
            self.sim.stats.unauthorized += 1
            return self.error(401, "2601", "Authentication failed")
        self.counts["jwt"] += 1
        user, _ = _basic(value)
        now = time.time()
        token = _issue(
            {
                "sub": user,
                "iat": int(now),
                "exp": now + self.jwt_ttl,
                "gen": self._generation,
                "jti": self.sim.serial(),
            }
        )
        rng = self.sim.rng
        result: dict[str, Any] = {rng.choice(("jwt", "token")): token}
        shape = rng.choice(("expires_at", "expires_in", "claim"))
        if shape == "expires_at":
            result["expires_at"] = datetime.fromtimestamp(now + self.jwt_ttl, UTC).isoformat()
        elif shape == "expires_in":
            result["expires_in"] = self.jwt_ttl
        return json_response({"status": _OK, "result": result})

    async def _send(self, request: web.Request) -> web.Response:
        """JSON only, as the seed asks (``Content-Type: application/json``)."""
        if self.authorized(request) and request.content_type != "application/json":
            self.sim.stats.bad_requests += 1
            return self.error(
                400,
                "2604",
                "Invalid body content. The Content-Type header must be application/json",
            )
        return await self.send_single(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, "404", f"{request.method} {request.path} is not a resource")

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """The v1 send body, validated with Zingle's error codes."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                "2604", "Invalid body content. Check that your request is valid JSON"
            ) from exc
        if not isinstance(data, dict):
            raise BadRequest("2604", "Invalid body content. Check that your request is valid JSON")
        _check_shape(data)
        key = data.get("uuid")
        if key is not None and not isinstance(key, str):
            raise BadRequest("2604", "uuid must be a string")
        text = data.get("body")
        items = []
        for n, recipient in enumerate(data["recipients"]):
            value = recipient.get("channel_value") if isinstance(recipient, dict) else None
            if not isinstance(value, str) or not value:
                raise BadRequest("3609", "Every recipient must have a channel_value specified")
            ref = f"{key}/{n}" if key else None
            if not _E164.match(value):
                items.append(
                    SendItem(
                        value, "", ref, Rejection("3613", f"'{value}' is not a valid Phone Number")
                    )
                )
            else:
                items.append(SendItem(value, str(text), ref))
        return items

    def blocked(self, item: SendItem) -> Rejection:
        """3613, as for a number Zingle will not take."""
        return Rejection("3613", f"'{item.to}' is not a valid Phone Number")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """Zingle's ``status`` object."""
        number = int(code) if code.isdigit() and len(code) == 4 else _SIM_CODES.get(code)
        return json_response(
            {
                "status": {
                    "text": HTTPStatus(status).phrase,
                    "status_code": status,
                    "description": detail,
                    "error_code": number,
                }
            },
            status,
        )

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """``result.message_ids``; any refused recipient makes the request a 400."""
        refused = next((o for o in outcomes if isinstance(o, Rejection)), None)
        if refused is not None:
            return self.error(400, refused.code, refused.detail)
        now = datetime.now(UTC).timestamp()
        ids = [o.id for o in outcomes if isinstance(o, SimMessage)]
        for message_id in ids:
            self._created.setdefault(message_id, now)
        return json_response({"status": _OK, "result": {"message_ids": ids}})

    def new_id(self, serial: int) -> str:
        """A UUID, as Zingle's ids are."""
        return str(uuid.uuid5(_SIM_NAMESPACE, str(serial)))

    def render(self, events: Sequence[SimEvent]) -> Post | None:
        """The opt-in webhook for a STOP/START reply; nothing for receipts or other texts."""
        (event,) = events
        if event.kind != "inbound" or self.settings.webhook_url is None:
            return None
        word = event.extra.get("text", "").strip().strip(".!").upper()
        action = "block" if word in _BLOCK_WORDS else "unblock" if word in _UNBLOCK_WORDS else None
        if action is None:
            return None
        phone = event.extra.get("from", "")
        service_phone = event.extra.get("service_phone", "+17605558585")
        if phone.startswith("+1") and len(phone) == 12 and self.sim.rng.random() < 0.5:
            phone = f"{phone[2:5]}-{phone[5:8]}-{phone[8:]}"  # the seed's "406-555-1212"
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Webhook-Secret"] = self.settings.webhook_secret
        body = {
            "action": action,
            "direction": "outbound",
            "service_id": event.extra.get("service_id", _SIM_SERVICE),
            "service_name": "Simulated Service",
            "contact_id": str(uuid.uuid5(_SIM_NAMESPACE, phone)),
            "contact_external_id": None,
            "contact_phone": phone,
            "service_phone": service_phone,
            "is_auto_blocked": True,
        }
        return Post(self.settings.webhook_url, headers, orjson.dumps(body))

    async def _message(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            self.sim.stats.unauthorized += 1
            return self.error(401, "2601", "Authentication failed")
        self.counts["lookup"] += 1
        message = self.sim.messages.get((self.family, request.match_info["message_id"]))
        if message is None:
            return self.error(404, "3600", "Message not found")
        dates = _iso if self.sim.rng.random() < 0.5 else _unix  # the seed: ISO-8601
        return json_response({"status": _OK, "result": self._message_object(message, dates)})

    def _message_object(self, message: SimMessage, dates: Any = None) -> dict[str, Any]:
        when = dates or _unix
        now_loop, now = asyncio.get_running_loop().time(), datetime.now(UTC).timestamp()
        settled_at = int(now - (now_loop - message.settles_at))
        status = message.status_at(now_loop)
        executed = status != "sent"
        statuses = (
            []
            if status in ("sent", "delivered")
            else [
                {
                    "type": "failed",
                    "description": _SIM_FAILURE[status],
                    "created_at": when(settled_at),
                }
            ]
        )
        return {
            "id": message.id,
            "body": message.body,
            "created_at": when(int(self._created.get(message.id, now))),
            "communication_direction": "outbound",
            "sender_type": "service",
            "recipient_type": "contact",
            "recipient": {"channel": {"type_class": "PhoneNumber", "value": message.to}},
            "is_delayed": False,
            "execute_at": None,
            "executed_at": when(settled_at) if executed else None,
            "read_at": None,
            "statuses": statuses,
        }


def _check_shape(data: dict[str, Any]) -> None:
    """The request-level checks, in the order Zingle documents its codes."""
    if data.get("sender_type") not in ("service", "contact"):
        raise BadRequest(
            "3605", "sender_type is required and must be one of 'service' or 'contact'"
        )
    if data.get("recipient_type") != "contact":
        raise BadRequest(
            "3606", "recipient_type must be 'contact' (the simulator sends to contacts only)"
        )
    if not isinstance(data.get("sender"), dict):
        raise BadRequest("3608", "sender is required and must be an object")
    recipients = data.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise BadRequest(
            "3607", "recipients is required and must be an array with at least one object"
        )
    types = data.get("channel_type_ids")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise BadRequest("3603", "channel_type_ids is required and should be an array of strings")
    if len(types) > 1:
        raise BadRequest(
            "3604",
            "Multiple channel_type_ids can only be specified when the recipient_type is 'label'",
        )
    if not isinstance(data.get("body"), str) or not data["body"].strip():
        raise BadRequest("3602", "Sending a message requires a body or attachments to be specified")


def _basic(value: str) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password


_OK = {"text": "OK", "status_code": 200, "description": None}


def _unix(seconds: int) -> int:
    return seconds


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _issue(claims: dict[str, Any]) -> str:
    """A JWT signed HS256 with the simulator's key."""
    signing = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(orjson.dumps(claims))
    signature = hmac.new(_SIM_KEY, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(signature)


def _claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT this simulator signed, else None."""
    signing, _, signature = token.rpartition(".")
    expected = _b64(hmac.new(_SIM_KEY, signing.encode(), hashlib.sha256).digest())
    if not signing or not hmac.compare_digest(signature, expected):
        return None
    payload = signing.partition(".")[2]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None
