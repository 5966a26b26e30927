"""Sunshine Conversations as the simulator plays it (family ``sunshine``): the v2 API the
seed documents, strictly.

* ``/v2/apps/{appId}/…`` (and the same under ``/sc``, the Zendesk host's prefix): create and
  get users (``externalId`` required, 409 ``conflict`` when it exists), list
  (``filter[userId]`` or ``filter[userExternalId]`` required) and create personal
  conversations (one per user: a second is 409, as with ``multiConvoEnabled`` off), create
  clients (``matchCriteria`` with ``type``, ``integrationId`` and an E.164 ``phoneNumber``,
  ``confirmation.type`` immediate, userActivity or prompt, ``target.conversationId`` of the
  user's conversation; a second client on one integration is 409), post messages (``author.type``
  business, ``content`` ``{type: text, text}``, optional ``destination.integrationId``; the
  user must have a client there, else 400) → 201 ``{messages: [{id, received, author, content,
  source}]}``, and create webhooks (``target``, ``triggers``) → 201 ``{webhook: {…, secret}}``
* Basic key id : secret, or an HS256 JWT with a ``kid`` and scope app or account;
  ``require_token`` is the secret (None: any). Errors ``{errors: [{code, title}]}``.
* receipts as v2 envelopes, up to 10 events per call, ``X-API-Key``; ``undelivered`` and
  ``failed`` fates are both ``…:delivery:failure`` (SunCo accepted the post either way)
* ``POST /sim/inbound/sunshine {from, text}`` posts a ``conversation:message``. The seed leaves
  open whether a reply carries ``source.client``: each callback picks at random either the
  client (``includeFullSource``) or no client and the author's user object with its
  ``externalId`` (``includeFullUser``). A number never sent to gets a user keyed by it.
* faults (429, 500, timeouts) apply to the message post only; the lookups always answer
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from engine.providers.sunshine import hs256
from engine.providers.sunshine_events import MESSAGE, PHONE
from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

_SIM_APP = "5e4af71a81966cfff3ef6550"
_SIM_WEBHOOK = "612905a67821c3f206d6909f"
_FAILURE = "conversation:message:delivery:failure"
_KINDS = {
    "sent": "conversation:message:delivery:channel",
    "delivered": "conversation:message:delivery:user",
    "undelivered": _FAILURE,
    "failed": _FAILURE,
}
_ERRORS = {
    "undelivered": ("undeliverable", "The handset could not be reached"),
    "failed": ("bad_request", "The carrier rejected the message"),
}
#: the simulator's own codes, as SunCo would say them
_CODES = {"rate_limited": "too_many_requests", "internal_error": "internal_server_error"}
_CONFIRMATIONS = frozenset({"immediate", "userActivity", "prompt"})
#: the clients of the conversation a message is posted to (set per request by send_single)
_CLIENTS: ContextVar[list[dict[str, Any]]] = ContextVar("sunshine_clients")

Handler = Callable[[web.Request], Awaitable[web.Response]]


class SunshineRoutes(ProviderRoutes):
    """The v2 users, conversations, clients, messages and webhooks endpoints."""

    family = "sunshine"
    receipts_per_post = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.users: dict[str, dict[str, Any]] = {}
        self.external: dict[str, str] = {}  # externalId → user id
        self.conversations: dict[str, dict[str, Any]] = {}
        self.clients: dict[str, list[dict[str, Any]]] = {}  # user id → clients

    def routes(self) -> list[web.RouteDef]:
        """Every endpoint at ``/v2/apps/{app_id}`` and at ``/sc/v2/apps/{app_id}``."""
        table = [
            ("GET", "", self._get_app),
            ("POST", "/users", self._create_user),
            ("GET", "/users/{user}", self._get_user),
            ("POST", "/users/{user}/clients", self._create_client),
            ("GET", "/conversations", self._list_conversations),
            ("POST", "/conversations", self._create_conversation),
            ("POST", "/conversations/{conversation}/messages", self.send_single),
            ("POST", "/integrations/{integration}/webhooks", self._create_webhook),
        ]
        return [
            web.route(
                method,
                f"{prefix}/v2/apps/{{app_id}}{path}",
                handler if handler == self.send_single else self._guard(handler),
            )
            for prefix in ("", "/sc")
            for method, path, handler in table
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            self.sim.stats.requests += 1
            if not self.authorized(request):
                self.sim.stats.unauthorized += 1
                return self.error(401, "unauthorized", "Authorization is required")
            try:
                return await handler(request)
            except BadRequest as exc:
                self.sim.stats.bad_requests += 1
                status = 404 if exc.code == "not_found" else 409 if exc.code == "conflict" else 400
                return self.error(status, exc.code, exc.detail)

        return guarded

    # users, conversations, clients, webhooks

    async def _get_app(self, request: web.Request) -> web.Response:
        """``GET /v2/apps/{appId}`` (the engine's ``providers check``)."""
        return json_response(
            {
                "app": {
                    "id": request.match_info["app_id"],
                    "displayName": "Simulated app",
                    "settings": {},
                }
            }
        )

    async def _create_user(self, request: web.Request) -> web.Response:
        data = await _object(request)
        external = data.get("externalId")
        if not isinstance(external, str) or not external:
            raise BadRequest("bad_request", "externalId is required")
        if external in self.external:
            raise BadRequest("conflict", "User already exists")
        user_id = f"{self.sim.serial():024x}"
        user: dict[str, Any] = {
            "id": user_id,
            "externalId": external,
            "signedUpAt": _now(),
            "hasPaymentInfo": False,
            "identities": [],
            "profile": {},
            "metadata": {},
        }
        self.users[user_id] = user
        self.external[external] = user_id
        return json_response({"user": user}, 201)

    def _user(self, key: str) -> dict[str, Any]:
        user = self.users.get(key) or self.users.get(self.external.get(key, ""))
        if user is None:
            raise BadRequest("not_found", "User not found")
        return user

    async def _get_user(self, request: web.Request) -> web.Response:
        return json_response({"user": self._user(request.match_info["user"])})

    async def _list_conversations(self, request: web.Request) -> web.Response:
        key = request.query.get("filter[userId]") or request.query.get("filter[userExternalId]")
        if not key:
            raise BadRequest("bad_request", "filter[userId] or filter[userExternalId] is required")
        user = self.users.get(key) or self.users.get(self.external.get(key, ""))
        found = [c for c in self.conversations.values() if user and c["userId"] == user["id"]]
        return json_response(
            {"conversations": [_public(c) for c in found], "meta": {"hasMore": False}}
        )

    async def _create_conversation(self, request: web.Request) -> web.Response:
        data = await _object(request)
        participants = data.get("participants")
        if data.get("type") != "personal":
            raise BadRequest("bad_request", "type must be personal")
        if not (
            isinstance(participants, list)
            and len(participants) == 1
            and isinstance(participants[0], dict)
        ):
            raise BadRequest("bad_request", "a personal conversation has one participant")
        who = participants[0].get("userId") or participants[0].get("userExternalId")
        user = self._user(str(who or ""))
        if any(c["userId"] == user["id"] for c in self.conversations.values()):
            raise BadRequest("conflict", "The user already has a personal conversation")
        at = _now()
        conversation = {
            "id": f"{self.sim.serial():024x}",
            "type": "personal",
            "isDefault": True,
            "lastUpdatedAt": at,
            "createdAt": at,
            "userId": user["id"],
        }
        self.conversations[conversation["id"]] = conversation
        return json_response({"conversation": _public(conversation)}, 201)

    async def _create_client(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["user"])
        data = await _object(request)
        criteria, confirmation, target = (
            data.get(k) for k in ("matchCriteria", "confirmation", "target")
        )
        if not isinstance(criteria, dict) or not all(
            isinstance(criteria.get(k), str) and criteria[k] for k in ("type", "integrationId")
        ):
            raise BadRequest("bad_request", "matchCriteria.type and integrationId are required")
        if not isinstance(criteria.get("phoneNumber"), str) or not PHONE.match(
            criteria["phoneNumber"]
        ):
            raise BadRequest("bad_request", "matchCriteria.phoneNumber must be E.164")
        if not isinstance(confirmation, dict) or confirmation.get("type") not in _CONFIRMATIONS:
            raise BadRequest("bad_request", "confirmation.type is required")
        conversation = self.conversations.get(
            str(target.get("conversationId")) if isinstance(target, dict) else ""
        )
        if conversation is None or conversation["userId"] != user["id"]:
            raise BadRequest("bad_request", "target.conversationId is not the user's")
        clients = self.clients.setdefault(user["id"], [])
        if any(c["integrationId"] == criteria["integrationId"] for c in clients):
            raise BadRequest("conflict", "A client is already linked on this integration")
        client = {
            "id": f"{self.sim.serial():024x}",
            "integrationId": criteria["integrationId"],
            "type": criteria["type"],
            "status": "pending",
            "phoneNumber": criteria["phoneNumber"],
        }
        clients.append({**client, "status": "active"})  # immediate: linked at once
        return json_response(
            {"client": {k: v for k, v in client.items() if k != "phoneNumber"}}, 201
        )

    async def _create_webhook(self, request: web.Request) -> web.Response:
        data = await _object(request)
        target, triggers = data.get("target"), data.get("triggers")
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            raise BadRequest("bad_request", "target must be a URL")
        if not (
            isinstance(triggers, list) and triggers and all(isinstance(t, str) for t in triggers)
        ):
            raise BadRequest("bad_request", "triggers must be a non-empty list")
        webhook = {
            "id": f"{self.sim.serial():024x}",
            "version": "v2",
            "target": target,
            "triggers": triggers,
            "secret": self.settings.webhook_secret or secrets.token_hex(16),
            "includeFullUser": bool(data.get("includeFullUser")),
            "includeFullSource": bool(data.get("includeFullSource")),
        }
        return json_response({"webhook": webhook}, 201)

    # the message post, through the shared send machinery

    async def send_single(self, request: web.Request) -> web.Response:
        """Find the conversation's clients, then send as every family does."""
        if self.authorized(request):
            conversation = self.conversations.get(request.match_info["conversation"])
            if conversation is None:
                self.sim.stats.requests += 1
                return self.error(404, "not_found", "Conversation not found")
            _CLIENTS.set(self.clients.get(conversation["userId"], []))
        return await super().send_single(request)

    def authorized(self, request: web.Request) -> bool:
        """Basic key id:secret, or an HS256 JWT with a ``kid`` and an app or account scope
        signed with the secret; ``require_token`` is the secret (None: any secret)."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            key_id, _, secret = _unbase64(value).partition(":")
            wanted = self.settings.require_token
            return bool(key_id and secret) and (
                wanted is None or hmac.compare_digest(secret.encode(), wanted.encode())
            )
        if scheme.lower() == "bearer":
            return _jwt_valid(value.strip(), self.settings.require_token)
        return False

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """A business text message, to the client of ``destination`` (or the first one)."""
        data = _json(body)
        author, content, destination = (data.get(k) for k in ("author", "content", "destination"))
        if not isinstance(author, dict) or author.get("type") != "business":
            raise BadRequest("bad_request", "author.type must be business")
        if not isinstance(content, dict) or content.get("type") != "text":
            raise BadRequest("bad_request", "content.type must be text")
        text = content.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("bad_request", "content.text is required")
        clients = _CLIENTS.get([])
        if isinstance(destination, dict) and destination.get("integrationId"):
            clients = [c for c in clients if c["integrationId"] == destination["integrationId"]]
        if not clients:
            raise BadRequest("bad_request", "The user has no client for the destination")
        return [SendItem(clients[0]["phoneNumber"], text)]

    def blocked(self, item: SendItem) -> Rejection:
        """``bad_request``: the channel refuses the number."""
        return Rejection("bad_request", f"Could not deliver to {item.to}")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """``{errors: [{code, title}]}``."""
        return json_response(
            {"errors": [{"code": _CODES.get(code, code), "title": detail}]}, status
        )

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """201 ``{messages: [{id, received, author, content, source}]}``, or a 400."""
        outcome = outcomes[0]
        if isinstance(outcome, Rejection):
            return self.error(400, outcome.code, outcome.detail)
        return json_response(
            {
                "messages": [
                    {
                        "id": outcome.id,
                        "received": _now(),
                        "author": {"type": "business"},
                        "content": {"type": "text", "text": outcome.body},
                        "source": {"type": "api:conversations"},
                    }
                ]
            },
            201,
        )

    def new_id(self, serial: int) -> str:
        """24 hex digits, as SunCo's ids are."""
        return f"{serial:024x}"

    # webhooks

    def render(self, events: Sequence[SimEvent]) -> Post:
        """A v2 envelope with every event, ``X-API-Key``."""
        assert self.settings.webhook_url is not None
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-API-Key"] = self.settings.webhook_secret
        body = {
            "app": {"id": _SIM_APP},
            "webhook": {"id": _SIM_WEBHOOK, "version": "v2"},
            "events": [self._event(e) for e in events],
        }
        return Post(self.settings.webhook_url, headers, orjson.dumps(body))

    def _user_of(self, phone: str) -> dict[str, Any]:
        """The user keyed by a number, made if the number was never sent to."""
        if phone not in self.external:
            user_id = f"{self.sim.serial():024x}"
            self.users[user_id] = {"id": user_id, "externalId": phone}
            self.external[phone] = user_id
        return self.users[self.external[phone]]

    def _event(self, event: SimEvent) -> dict[str, Any]:
        at = event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        conversation = {"id": f"c{event.id}", "type": "personal"}
        if event.kind == "inbound":
            return {
                "id": event.id,
                "type": MESSAGE,
                "createdAt": at,
                "payload": {"conversation": conversation, "message": self._reply(event, at)},
            }
        assert event.message is not None
        user = self._user_of(event.message.to)
        payload: dict[str, Any] = {
            "user": {"id": user["id"], "externalId": user["externalId"]},
            "conversation": conversation,
            "message": {"id": event.message.id},
            "destination": {"type": "twilio", "integrationId": "sim-sms"},
            "externalMessages": [{"id": f"SM{event.message.id}"}],
            "isFinalEvent": event.kind != "sent",
        }
        if event.kind in _ERRORS:
            code, detail = _ERRORS[event.kind]
            payload["error"] = {"code": code, "message": detail}
        return {"id": event.id, "type": _KINDS[event.kind], "createdAt": at, "payload": payload}

    def _reply(self, event: SimEvent, at: str) -> dict[str, Any]:
        """A user's text, with the client or with the user object (one at random)."""
        phone = event.extra.get("from", "")
        user = self._user_of(phone)
        author: dict[str, Any] = {"type": "user", "userId": user["id"], "displayName": phone}
        source: dict[str, Any] = {"type": "twilio", "integrationId": "sim-sms"}
        if self.sim.rng.random() < 0.5:
            source["client"] = {
                "id": f"cl{event.id}",
                "type": "twilio",
                "status": "active",
                "integrationId": "sim-sms",
                "externalId": phone,
                "displayName": phone,
                "raw": {"from": phone},
            }
        else:
            author["user"] = {"id": user["id"], "externalId": phone, "profile": {}}
        return {
            "id": event.id,
            "received": at,
            "author": author,
            "source": source,
            "content": {"type": "text", "text": event.extra.get("text", "")},
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _public(conversation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conversation.items() if k != "userId"}


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("bad_request", "Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("bad_request", "Request body must be an object")
    return data


async def _object(request: web.Request) -> dict[str, Any]:
    return _json(await request.read())


def _unbase64(value: str, urlsafe: bool = False) -> str:
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def _jwt_valid(token: str, secret: str | None) -> bool:
    """An HS256 JWT with a ``kid`` and an app/account scope, signed with ``secret``."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = orjson.loads(_unbase64(parts[0], urlsafe=True) or "null")
        claims = orjson.loads(_unbase64(parts[1], urlsafe=True) or "null")
    except orjson.JSONDecodeError:
        return False
    if not (
        isinstance(header, dict)
        and header.get("alg") == "HS256"
        and header.get("kid")
        and isinstance(claims, dict)
        and claims.get("scope") in ("app", "account")
    ):
        return False
    if secret is None:
        return bool(parts[2])
    expected = hs256(f"{parts[0]}.{parts[1]}", secret.encode())
    return hmac.compare_digest(parts[2].encode(), expected.encode())
