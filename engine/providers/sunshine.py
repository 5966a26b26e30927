"""Zendesk Sunshine Conversations (SunCo, formerly Smooch): account type ``sunshine``.

Wire format (seed 001, the SunCo v2 OpenAPI spec and SDKs, providers.md §4 and its
"engine choices" row):

* auth: HTTP Basic with the API key id as user and its secret as password (default), or
  ``Authorization: Bearer <JWT>`` (``auth: jwt``): HS256 signed with the key secret, header
  ``{alg: HS256, typ: JWT, kid: <key id>}``, payload ``{scope: app}``; made once with the
  standard library (no expiry claim: SunCo app JWTs do not need one)
* base URL ``https://api.smooch.io`` (US; ``https://api.eu-1.smooch.io`` for EU apps, or
  ``https://{subdomain}.zendesk.com/sc`` for Zendesk-licensed apps: set ``base_url``)
* send: the Notification API, the documented way to reach a phone number directly:
  ``POST {base}{notifications_path}`` (default ``/v1.1/apps/{app_id}/notifications``)
  ``{destination: {integrationId, destinationId: E.164}, author: {role: appMaker},
  message: {type: text, text}}`` → 201 ``{notification: {_id}}``
* errors ``{errors: [{code, title}]}``: 429 is ``retry`` after ``Retry-After``; 409
  (concurrent update: the request was not applied) is ``retry``; 400, 401, 402, 403, 404,
  413, 423 (``locked``: 30,000 messages in the conversation) and every other 4xx are
  ``rejected`` with the first error's ``code``; 5xx and timeouts are ``unknown`` (SunCo has
  no idempotency key)
* webhooks (v2): ``{app, webhook, events: [{id, type, createdAt, payload}]}`` with the
  webhook's secret in the ``X-API-Key`` header (no body signature exists).
  ``conversation:message:delivery:channel`` → ``sent``, ``…:user`` → ``delivered``,
  ``…:failure`` → ``failed`` (``payload.error.code`` / ``message``), matched on
  ``payload.message.id``; ``events[].id`` is the dedupe key, ``createdAt`` the time.
  ``conversation:message`` from a user is a reply (Inbound), and STOP/START ones an
  OptChange.

What rests on a guess [G], so the adapter is tolerant there:

* the notification path: the v2 spec has none; the v1.x SDKs use ``/v1/…`` and
  ``/v1.1/…``, so the prefix is the ``notifications_path`` setting
* ``payload.message.id`` of a delivery event is the notification's ``_id``; the message
  text is a v1 ``{type: text, text}`` object
* a failure is always ``failed``: SunCo does not say whether the carrier or the channel
  refused, and the adapter keeps no state to tell a failure after ``sent`` apart
* ``delivery:channel`` stays ``sent`` even with ``isFinalEvent: true`` (no later event
  will come; ``sent`` is the most SunCo will say); other ``conversation:message:delivery:*``
  types are logged and kept unmapped; ``conversation:read`` is conversation-level with no
  message id, so it and every other event type are ignored
* a reply's phone number is the SMS client's ``externalId`` (for Twilio-type clients the
  user's phone number), which SunCo includes only when the webhook has
  ``includeFullSource: true``; ``source.client.raw.from`` is the fallback. A user message
  with no phone number there (web, app, Messenger users) is ignored. Our own
  (business-authored) messages echoed back are ignored.
* our message id has no field in a notification, so receipts carry the provider id only
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import orjson
from aiohttp import web
from pydantic import SecretStr, field_validator

from engine.providers.base import (
    AccountBase,
    Adapter,
    Inbound,
    MalformedWebhook,
    Outbound,
    Receipt,
    Response,
    SendResult,
    WebhookEvents,
    as_e164,
    decode_body,
    opt_change_for_reply,
)
from engine.providers.simulator import (
    BadRequest,
    Post,
    ProviderRoutes,
    Rejection,
    SendItem,
    SimEvent,
    SimMessage,
    json_response,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: v2 webhook event types that report on a message we sent, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "conversation:message:delivery:channel": MessageStatus.SENT,
    "conversation:message:delivery:user": MessageStatus.DELIVERED,
    "conversation:message:delivery:failure": MessageStatus.FAILED,
}
DELIVERY = "conversation:message:delivery:"
MESSAGE = "conversation:message"
#: HTTP statuses SunCo answers when it did not apply the request
RETRYABLE = frozenset({429, 409})

_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")


class SunshineAccount(AccountBase):
    """A SunCo app: an API key (id and secret) and the SMS integration to send through."""

    default_base_url: ClassVar[str] = "https://api.smooch.io"

    type: Literal["sunshine"] = "sunshine"
    app_id: str
    key_id: str
    key_secret: SecretStr
    auth: Literal["basic", "jwt"] = "basic"
    integration_id: str  # the SMS (e.g. Twilio, MessageBird) integration
    notifications_path: str = "/v1.1/apps/{app_id}/notifications"

    @field_validator("notifications_path")
    @classmethod
    def _path(cls, value: str) -> str:
        try:
            value.format(app_id="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("may contain no placeholder but {app_id}") from exc
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(signing_input: str, key: bytes) -> str:
    """The base64url HMAC-SHA256 signature of a JWS signing input (RFC 7515)."""
    return _b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def app_jwt(key_id: str, secret: str) -> str:
    """An app-scoped SunCo JWT: ``{alg: HS256, typ: JWT, kid}`` . ``{scope: app}``."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}))
    payload = _b64url(orjson.dumps({"scope": "app"}))
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{hs256(signing_input, secret.encode())}"


class SunshineAdapter(Adapter[SunshineAccount]):
    """Client of the SunCo Notification API and reader of its v2 webhooks."""

    account_model = SunshineAccount
    webhook_secret_name = "X-API-Key"
    retryable_statuses = RETRYABLE

    def auth_headers(self) -> dict[str, str]:
        """Basic key id:secret, or a Bearer app JWT."""
        key_id, secret = self.account.key_id, self.account.key_secret.get_secret_value()
        if self.account.auth == "jwt":
            return {"Authorization": f"Bearer {app_jwt(key_id, secret)}"}
        pair = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    @property
    def _path(self) -> str:
        return self.account.notifications_path.format(app_id=quote(self.account.app_id, safe=""))

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST {notifications_path}``."""
        body = {
            "destination": {"integrationId": self.account.integration_id,
                            "destinationId": message.to},
            "author": {"role": "appMaker"},
            "message": {"type": "text", "text": message.body},
        }
        result = await self._request("POST", self._path, json=body)
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        data = result.json()
        notification = data.get("notification") if isinstance(data, dict) else None
        found = notification.get("_id") if isinstance(notification, dict) else None
        if isinstance(found, str) and found:
            return SendResult.accepted(found)
        return SendResult.unknown("bad_response", "no notification._id")

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A v2 envelope: delivery events become receipts, user messages replies."""
        data = decode_body(content_type or "application/json", body)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise MalformedWebhook("expected {app, webhook, events: [objects]}")
        receipts, replies = [], []
        for event in events:
            kind = event.get("type")
            if not isinstance(kind, str) or not isinstance(event.get("payload"), dict):
                raise MalformedWebhook("event without a type and a payload")
            if kind.startswith(DELIVERY):
                receipts.append(_receipt(kind, event))
            elif kind == MESSAGE and (reply := _reply(event)) is not None:
                replies.append(reply)
        opts = [opt_change_for_reply(r.from_, r.text, r.raw) for r in replies]
        return WebhookEvents(tuple(receipts), tuple(replies),
                             tuple(o for o in opts if o is not None))


def _error(response: Response) -> SendResult:
    """A 4xx is a rejection with the first error's code; anything else is unknown."""
    data = response.json()
    errors = data.get("errors") if isinstance(data, dict) else None
    errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    code = next((str(e["code"]) for e in errors if e.get("code")), str(response.status))
    titles = [str(e["title"]) for e in errors if e.get("title")]
    detail = "; ".join(titles) or response.body[:200].decode(errors="replace")
    if 400 <= response.status < 500:
        return SendResult.rejected(code, detail)
    return SendResult.unknown(code, detail)  # 1xx/3xx: not a documented answer


def _receipt(kind: str, event: dict[str, Any]) -> Receipt:
    payload = event["payload"]
    message = payload.get("message")
    provider_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(provider_id, str) or not provider_id:
        raise MalformedWebhook(f"{kind} without payload.message.id")
    status = STATUSES.get(kind)
    if status is None:
        log.warning("unknown SunCo delivery event %r kept unmapped", kind,
                    extra={"provider": "sunshine"})
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    underlying = error.get("underlyingError")
    detail = error.get("message") or (
        underlying.get("message") if isinstance(underlying, dict) else None)
    return Receipt(
        provider_message_id=provider_id,
        message_id=None,
        status=status,
        provider_status=kind,
        error_code=_opt_str(error.get("code")),
        error_detail=_opt_str(detail),
        event_id=_opt_str(event.get("id")),
        occurred_at=_timestamp(event.get("createdAt")),
        raw=event,
    )


def _reply(event: dict[str, Any]) -> Inbound | None:
    """A text a user sent from a phone; None for anything else."""
    message = event["payload"].get("message")
    if not isinstance(message, dict):
        raise MalformedWebhook("conversation:message without payload.message")
    author, content = message.get("author"), message.get("content")
    if not isinstance(author, dict) or author.get("type") != "user":
        return None  # our own messages, echoed
    if not isinstance(content, dict) or not isinstance(content.get("text"), str):
        return None  # an image, a location, ...: no text to read
    phone = _phone(message.get("source"))
    if phone is None:
        log.info("SunCo user message without a phone number ignored",
                 extra={"provider": "sunshine"})
        return None
    return Inbound(phone, content["text"], _opt_str(message.get("id")), None, event)


def _phone(source: Any) -> str | None:
    """The user's number from ``source.client`` (``includeFullSource``)."""
    client = source.get("client") if isinstance(source, dict) else None
    if not isinstance(client, dict):
        return None
    raw = client.get("raw")
    fallback = raw.get("from") if isinstance(raw, dict) else None
    for candidate in (client.get("externalId"), fallback):
        if isinstance(candidate, str) and _PHONE.match(as_e164(candidate)):
            return as_e164(candidate)
    return None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- SunCo as the simulator plays it -------------------------------------------------------

_SIM_APP = "5e4af71a81966cfff3ef6550"
_SIM_WEBHOOK = "612905a67821c3f206d6909f"
_SIM_KINDS = {"sent": "conversation:message:delivery:channel",
              "delivered": "conversation:message:delivery:user",
              "undelivered": "conversation:message:delivery:failure",
              "failed": "conversation:message:delivery:failure"}
_SIM_ERRORS = {"undelivered": ("undeliverable", "The handset could not be reached"),
               "failed": ("bad_request", "The carrier rejected the message")}
#: the simulator's own codes, as SunCo would say them
_SIM_CODES = {"rate_limited": "too_many_requests", "internal_error": "internal_server_error"}


class SunshineRoutes(ProviderRoutes):
    """The Notification API (``/v1`` and ``/v1.1``) with Basic or JWT auth, and v2 webhooks
    carrying several events per call."""

    family = "sunshine"
    receipts_per_post = 10

    def routes(self) -> list[web.RouteDef]:
        """Both notification paths the SDKs use."""
        return [web.post(f"/{version}/apps/{{app_id}}/notifications", self.send_single)
                for version in ("v1", "v1.1")]

    def authorized(self, request: web.Request) -> bool:
        """Basic key id:secret, or an HS256 JWT with a ``kid`` and an app or account scope
        signed with the secret; ``require_token`` is the secret (None: any secret)."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            key_id, _, secret = _unbase64(value).partition(":")
            wanted = self.settings.require_token
            return bool(key_id and secret) and (
                wanted is None or hmac.compare_digest(secret.encode(), wanted.encode()))
        if scheme.lower() == "bearer":
            return _jwt_valid(value.strip(), self.settings.require_token)
        return False

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """A notification: destination, author and a text message."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("bad_request", "Request body is not valid JSON") from exc
        destination = data.get("destination") if isinstance(data, dict) else None
        if not isinstance(destination, dict) or not isinstance(
                destination.get("integrationId"), str):
            raise BadRequest("bad_request", "destination.integrationId is required")
        author, message = data.get("author"), data.get("message")
        if not isinstance(author, dict) or author.get("role") != "appMaker":
            raise BadRequest("bad_request", "author.role must be appMaker")
        if not isinstance(message, dict) or message.get("type") != "text":
            raise BadRequest("bad_request", "message.type must be text")
        text, number = message.get("text"), destination.get("destinationId")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("bad_request", "message.text is required")
        if not isinstance(number, str) or not _PHONE.match(number):
            return [SendItem(str(number), text, None, Rejection(
                "bad_request", "destinationId must be a phone number in E.164 format"))]
        return [SendItem(number, text)]

    def blocked(self, item: SendItem) -> Rejection:
        """``bad_request``: no client can be made for the number."""
        return Rejection("bad_request", f"Could not create a client for {item.to}")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """``{errors: [{code, title}]}``."""
        return json_response({"errors": [{"code": _SIM_CODES.get(code, code),
                                          "title": detail}]}, status)

    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """201 ``{notification: {_id}}``, or a 400."""
        outcome = outcomes[0]
        if isinstance(outcome, Rejection):
            return self.error(400, outcome.code, outcome.detail)
        return json_response({"notification": {"_id": outcome.id}}, 201)

    def new_id(self, serial: int) -> str:
        """24 hex digits, as SunCo's ids are."""
        return f"{serial:024x}"

    def render(self, events: Sequence[SimEvent]) -> Post:
        """A v2 envelope with every event, ``X-API-Key``."""
        assert self.settings.webhook_url is not None
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-API-Key"] = self.settings.webhook_secret
        body = {"app": {"id": _SIM_APP}, "webhook": {"id": _SIM_WEBHOOK, "version": "v2"},
                "events": [self._event(e) for e in events]}
        return Post(self.settings.webhook_url, headers, orjson.dumps(body))

    @staticmethod
    def _event(event: SimEvent) -> dict[str, Any]:
        at = event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        conversation = {"id": f"c{event.id}", "type": "personal"}
        if event.kind == "inbound":
            phone = event.extra.get("from", "")
            client = {"id": f"cl{event.id}", "type": "twilio", "status": "active",
                      "integrationId": "sim-sms", "externalId": phone, "displayName": phone,
                      "raw": {"from": phone}}
            payload: dict[str, Any] = {"conversation": conversation, "message": {
                "id": event.id, "received": at,
                "author": {"type": "user", "userId": f"u{phone}", "displayName": phone},
                "content": {"type": "text", "text": event.extra.get("text", "")},
                "source": {"type": "twilio", "integrationId": "sim-sms", "client": client}}}
            return {"id": event.id, "type": MESSAGE, "createdAt": at, "payload": payload}
        assert event.message is not None
        payload = {"user": {"id": f"u{event.message.to}"}, "conversation": conversation,
                   "message": {"id": event.message.id},
                   "destination": {"type": "notification", "integrationId": "sim-sms"},
                   "externalMessages": [{"id": f"SM{event.message.id}"}],
                   "isFinalEvent": event.kind != "sent"}
        if event.kind in _SIM_ERRORS:
            code, detail = _SIM_ERRORS[event.kind]
            payload["error"] = {"code": code, "message": detail}
        return {"id": event.id, "type": _SIM_KINDS[event.kind], "createdAt": at,
                "payload": payload}


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
    if not (isinstance(header, dict) and header.get("alg") == "HS256" and header.get("kid")
            and isinstance(claims, dict) and claims.get("scope") in ("app", "account")):
        return False
    if secret is None:
        return bool(parts[2])
    expected = hs256(f"{parts[0]}.{parts[1]}", secret.encode())
    return hmac.compare_digest(parts[2].encode(), expected.encode())
