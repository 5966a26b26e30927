"""Zingle (Medallia Concierge) REST API: account type ``zingle``.

Wire format (seed 000, the Zingle REST API docs, providers.md §3 and its "engine choices"
row):

* auth: HTTP Basic with the Zingle username and password, or ``Authorization: Bearer
  <JWT>`` (a JWT from Zingle's JWT API or the "My Settings" window); exactly one of the two
* base URL ``https://api.zingle.me`` (the docs' ``https://api.zingle.me/v1/`` with the
  version kept in our paths)
* send: ``POST {base}/v1/services/{service_id}/messages`` ``{sender_type: service, sender:
  {id: service_id[, channel_value: sender]}, recipient_type: contact, recipients:
  [{channel_value: E.164}], channel_type_ids: [channel_type_id], body, uuid}`` → 200
  ``{status, result: {message_ids: [id]}}``
* ``uuid`` is Zingle's "unique identifier to prevent the processing of multiple of the same
  message": we send uuid5(``uuid_namespace``, our message id), the same on every attempt,
  so a repeated request cannot deliver twice. The adapter is therefore ``idempotent_sends``:
  a timeout, a dropped connection, a 5xx or an unreadable 2xx is ``retry``, not ``unknown``.
* errors: ``{status: {status_code, text, description, error_code}}`` (the table below);
  2600 (server error) is retryable, every other documented code is permanent
* no delivery webhook: ``poll`` reads ``GET {base}/v1/services/{service_id}/messages/{id}``
* the one webhook, "Contact Opt-In Status" (``{action: block|unblock, direction:
  inbound|outbound, contact_phone, ...}``), authenticated by a custom header the admin adds
  in Zingle (``X-Webhook-Secret``; Zingle signs nothing)

What rests on a guess [G], so the adapter is tolerant there:

* statuses: the only documented ``statuses[].type`` is ``failed`` (Zingle's iOS SDK). A
  failure maps to ``failed`` with its ``description`` as the reason; otherwise a message
  with ``executed_at`` set is ``sent``. Zingle has **no delivered signal**, so a Zingle
  message never becomes ``delivered``. A message not yet executed (``is_delayed``, or
  still queued at Zingle) is also reported ``sent`` (our ``queued`` means "not yet handed
  over", which it is not), with ``provider_status`` ``delayed`` or ``queued``. Other
  ``statuses[].type`` values are logged and kept as ``provider_status``, never an error.
  ``read_at`` is not read as ``read``: the engine's choices do not include it, and on an
  outbound message its meaning is not documented.
* ``uuid`` is deduplicated per service for as long as Zingle remembers it. Our ids restart
  if the database is recreated, so an operator who does that against the same Zingle
  service must set a new ``uuid_namespace``, or Zingle may drop new messages as repeats.
* opt-in webhook: only ``direction: outbound`` changes whether we may send (STOP, or a
  user blocking outbound messages); ``direction: inbound`` blocks (the business muting a
  contact's messages to it) are ignored. ``contact_phone`` is made E.164 when it is digits.
* Zingle echoes neither our id nor the ``uuid`` in the message object, so polled receipts
  carry the provider id only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import orjson
from aiohttp import web
from pydantic import SecretStr, model_validator

from engine.providers.base import (
    AccountBase,
    Adapter,
    MalformedWebhook,
    OptChange,
    Outbound,
    Receipt,
    Response,
    SendResult,
    WebhookEvents,
    as_e164,
    decode_body,
)
from engine.providers.simulator import (
    BadRequest,
    Post,
    ProviderRoutes,
    Rejection,
    SendItem,
    SimEvent,
    SimMessage,
    Simulator,
    json_response,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: Zingle's error codes (``status.error_code``) a send can meet (error_codes.md); every one
#: is permanent except those in RETRYABLE_CODES
ERROR_CODES: Mapping[int, str] = {
    2600: "server error",
    2601: "authentication failed",
    2602: "permission denied",
    2604: "invalid JSON body",
    2605: "unknown channel type",
    2606: "invalid phone number format",
    2800: "service not found",
    3108: "lacking privileges to block",
    3602: "a body or attachments are required",
    3603: "channel_type_ids is required",
    3604: "several channel types only for a label",
    3605: "sender_type must be service or contact",
    3606: "recipient_type must be service, contact or label",
    3607: "recipients must be a non-empty list",
    3608: "sender must be an object",
    3609: "every recipient needs a channel_value",
    3610: "either side must be a service",
    3611: "channel_type_id is not valid",
    3613: "not a valid channel value",
    3617: "no channel found for the channel types",
    3618: "several channels found; narrow channel_type_ids",
    3623: "no attachments to labels",
    3625: "invalid sender, recipient and channel combination",
    3626: "labels are SMS only",
    3632: "delay_minutes must be positive",
    3637: "no MMS privilege",
    3638: "no multi-send privilege",
}
RETRYABLE_CODES = frozenset({2600})

#: ``statuses[].type`` values, onto ours (the only documented one)
STATUSES: Mapping[str, MessageStatus] = {"failed": MessageStatus.FAILED}

API = "/v1/services"
#: uuid5 namespace of our message ids, unless the account sets ``uuid_namespace``
DEFAULT_NAMESPACE = uuid.UUID("6d0f3a52-5c1e-4a53-9b0e-3f1c2a7d9e41")


class ZingleAccount(AccountBase):
    """A Zingle service: Basic (``username``/``password``) or Bearer (``jwt``) credentials."""

    default_base_url: ClassVar[str] = "https://api.zingle.me"

    type: Literal["zingle"] = "zingle"
    username: str | None = None
    password: SecretStr | None = None
    jwt: SecretStr | None = None
    service_id: str
    channel_type_id: str  # the service's "Phone Number" channel type
    uuid_namespace: uuid.UUID = DEFAULT_NAMESPACE  # change it if message ids restart

    @model_validator(mode="after")
    def _one_credential(self) -> ZingleAccount:
        basic = (self.username, self.password) != (None, None)
        if basic and (not self.username or self.password is None):
            raise ValueError("username and password go together")
        if basic == (self.jwt is not None):
            raise ValueError("set either username and password (Basic) or jwt (Bearer)")
        return self


def message_uuid(namespace: uuid.UUID, message_id: int) -> str:
    """The ``uuid`` for our message: the same for every attempt at that message."""
    return str(uuid.uuid5(namespace, str(message_id)))


class ZingleAdapter(Adapter[ZingleAccount]):
    """Client of the Zingle REST API (v1)."""

    delivery_webhooks = False  # Zingle reports deliveries only when asked

    account_model = ZingleAccount
    supports_polling = True
    idempotent_sends = True

    def auth_headers(self) -> dict[str, str]:
        """Bearer JWT, or Basic username:password."""
        if self.account.jwt is not None:
            return {"Authorization": f"Bearer {self.account.jwt.get_secret_value()}"}
        assert self.account.username is not None and self.account.password is not None
        pair = f"{self.account.username}:{self.account.password.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    @property
    def _messages(self) -> str:
        return f"{API}/{quote(self.account.service_id, safe='')}/messages"

    def _payload(self, message: Outbound) -> dict[str, Any]:
        sender: dict[str, str] = {"id": self.account.service_id}
        if message.sender or self.account.sender:
            sender["channel_value"] = message.sender or self.account.sender or ""
        return {
            "sender_type": "service",
            "sender": sender,
            "recipient_type": "contact",
            "recipients": [{"channel_value": message.to}],
            "channel_type_ids": [self.account.channel_type_id],
            "body": message.body,
            "uuid": message_uuid(self.account.uuid_namespace, message.message_id),
        }

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /v1/services/{service_id}/messages``."""
        result = await self._request("POST", self._messages, json=self._payload(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return self._error(result)
        data = result.json()
        found = data.get("result") if isinstance(data, dict) else None
        ids = found.get("message_ids") if isinstance(found, dict) else None
        if isinstance(ids, list) and ids and isinstance(ids[0], str) and ids[0]:
            return SendResult.accepted(ids[0])
        return self._ambiguous("bad_response", "no result.message_ids")

    def _error(self, response: Response) -> SendResult:
        """A non-2xx Zingle ``status`` object: its ``error_code``, else the HTTP status."""
        data = response.json()
        status = data.get("status") if isinstance(data, dict) else None
        status = status if isinstance(status, dict) else {}
        code = _error_code(status.get("error_code"))
        detail = (status.get("description") or status.get("error_message")
                  or ERROR_CODES.get(code or 0) or response.body[:200].decode(errors="replace"))
        if code in RETRYABLE_CODES:
            return SendResult.retry(str(code), detail)
        if 400 <= response.status < 500:
            return SendResult.rejected(str(code if code is not None else response.status), detail)
        return self._ambiguous(str(response.status), detail)  # 1xx/3xx: not documented

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """The Contact Opt-In Status webhook: an outbound block or unblock."""
        data = decode_body(content_type or "application/json", body)
        if not isinstance(data, dict):
            raise MalformedWebhook("expected a JSON object")
        action, direction, phone = data.get("action"), data.get("direction"), data.get(
            "contact_phone")
        if action not in ("block", "unblock"):
            raise MalformedWebhook("action must be block or unblock")
        if direction not in ("inbound", "outbound"):
            raise MalformedWebhook("direction must be inbound or outbound")
        if not isinstance(phone, str) or not phone.strip():
            raise MalformedWebhook("opt-in webhook without contact_phone")
        if direction == "inbound":  # the business muting the contact, not an opt-out
            return WebhookEvents()
        return WebhookEvents(opt_changes=(OptChange(as_e164(phone), action == "block", "sms",
                                                    data),))

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """``GET /v1/services/{service_id}/messages/{id}`` for each id, ``concurrency`` at a
        time; ids Zingle does not answer for are left out."""
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(provider_id: str) -> Receipt | None:
            async with limit:
                result = await self._request(
                    "GET", f"{self._messages}/{quote(provider_id, safe='')}")
            if isinstance(result, SendResult) or not result.ok:
                return None
            return _polled(provider_id, result.json())

        found = await asyncio.gather(*(one(i) for i in provider_message_ids))
        return [receipt for receipt in found if receipt is not None]


def _polled(provider_id: str, data: Any) -> Receipt | None:
    """A Message object (``result`` of the lookup) as a receipt."""
    message = data.get("result") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        return None
    statuses = [s for s in message.get("statuses") or () if isinstance(s, dict)]
    for entry in statuses:
        if entry.get("type") not in STATUSES:
            log.warning("unknown Zingle status %r kept unmapped", entry.get("type"),
                        extra={"provider": "zingle"})
    failure = next((s for s in statuses if s.get("type") == "failed"), None)
    pid = str(message.get("id") or provider_id)
    if failure is not None:
        return Receipt(pid, None, MessageStatus.FAILED, "failed", "failed",
                       _opt_str(failure.get("description")),
                       occurred_at=_unix(failure.get("created_at")), raw=message)
    executed = _unix(message.get("executed_at"))
    latest = str(statuses[-1].get("type")) if statuses else None
    word = latest or ("executed" if executed else
                      "delayed" if message.get("is_delayed") else "queued")
    return Receipt(pid, None, MessageStatus.SENT, word, occurred_at=executed, raw=message)


def _error_code(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _unix(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


# --- Zingle as the simulator plays it ------------------------------------------------------

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SIM_NAMESPACE = uuid.UUID("0b7c9a4e-2d1f-4e8a-9c3b-5a6d7e8f9012")
_SIM_SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"
_SIM_FAILURE = {"undelivered": "Carrier reported the handset unreachable",
                "failed": "Carrier rejected the message"}
#: the simulator's own codes, as Zingle would say them
_SIM_CODES = {"unauthorized": 2601, "internal_error": 2600}
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

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self._created: dict[str, float] = {}

    def routes(self) -> list[web.RouteDef]:
        """The documented paths."""
        return [
            web.post(f"{API}/{{service_id}}/messages", self.send_single),
            web.get(f"{API}/{{service_id}}/messages/{{message_id}}", self._message),
        ]

    def authorized(self, request: web.Request) -> bool:
        """Basic username:password or a Bearer JWT; ``require_token`` is the password or
        the JWT."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            secret = value.strip()
        elif scheme.lower() == "basic":
            user, secret = _basic(value)
            if not user:
                return False
        else:
            return False
        wanted = self.settings.require_token
        if wanted is None:
            return bool(secret)
        return hmac.compare_digest(secret.encode(), wanted.encode())

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """The v1 send body, validated with Zingle's error codes."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("2604", "Invalid body content. Check that your request is valid "
                             "JSON") from exc
        if not isinstance(data, dict):
            raise BadRequest("2604", "Invalid body content. Check that your request is valid "
                             "JSON")
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
                items.append(SendItem(value, "", ref, Rejection(
                    "3613", f"'{value}' is not a valid Phone Number")))
            else:
                items.append(SendItem(value, str(text), ref))
        return items

    def blocked(self, item: SendItem) -> Rejection:
        """3613, as for a number Zingle will not take."""
        return Rejection("3613", f"'{item.to}' is not a valid Phone Number")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """Zingle's ``status`` object."""
        number = int(code) if code.isdigit() else _SIM_CODES.get(code)
        return json_response({"status": {
            "text": HTTPStatus(status).phrase, "status_code": status, "description": detail,
            "error_code": number,
        }}, status)

    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """``result.message_ids``; any refused recipient makes the request a 400."""
        refused = next((o for o in outcomes if isinstance(o, Rejection)), None)
        if refused is not None:
            return self.error(400, refused.code, refused.detail)
        now = datetime.now(UTC).timestamp()
        ids = [o.id for o in outcomes if isinstance(o, SimMessage)]
        for message_id in ids:
            self._created.setdefault(message_id, now)
        return json_response({"status": {"text": "OK", "status_code": 200, "description": None},
                              "result": {"message_ids": ids}})

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
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Webhook-Secret"] = self.settings.webhook_secret
        body = {"action": action, "direction": "outbound",
                "service_id": event.extra.get("service_id", _SIM_SERVICE),
                "service_name": "Simulated Service",
                "contact_id": str(uuid.uuid5(_SIM_NAMESPACE, phone)),
                "contact_external_id": None, "contact_phone": phone,
                "service_phone": event.extra.get("service_phone"), "is_auto_blocked": True}
        return Post(self.settings.webhook_url, headers, orjson.dumps(body))

    async def _message(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "2601", "Authentication failed")
        message = self.sim.messages.get((self.family, request.match_info["message_id"]))
        if message is None:
            return self.error(404, "3600", "Message not found")
        return json_response({"status": {"text": "OK", "status_code": 200, "description": None},
                              "result": self._message_object(message)})

    def _message_object(self, message: SimMessage) -> dict[str, Any]:
        now_loop, now = asyncio.get_running_loop().time(), datetime.now(UTC).timestamp()
        settled_at = int(now - (now_loop - message.settles_at))
        status = message.status_at(now_loop)
        executed = status != "sent"
        statuses = [] if status in ("sent", "delivered") else [
            {"type": "failed", "description": _SIM_FAILURE[status], "created_at": settled_at}]
        return {
            "id": message.id, "body": message.body,
            "created_at": int(self._created.get(message.id, now)),
            "communication_direction": "outbound", "sender_type": "service",
            "recipient_type": "contact",
            "recipient": {"channel": {"type_class": "PhoneNumber", "value": message.to}},
            "is_delayed": False, "execute_at": None,
            "executed_at": settled_at if executed else None, "read_at": None,
            "statuses": statuses,
        }


def _check_shape(data: dict[str, Any]) -> None:
    """The request-level checks, in the order Zingle documents its codes."""
    if data.get("sender_type") not in ("service", "contact"):
        raise BadRequest("3605", "sender_type is required and must be one of 'service' or "
                         "'contact'")
    if data.get("recipient_type") != "contact":
        raise BadRequest("3606", "recipient_type must be 'contact' (the simulator sends to "
                         "contacts only)")
    if not isinstance(data.get("sender"), dict):
        raise BadRequest("3608", "sender is required and must be an object")
    recipients = data.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise BadRequest("3607", "recipients is required and must be an array with at least "
                         "one object")
    types = data.get("channel_type_ids")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise BadRequest("3603", "channel_type_ids is required and should be an array of "
                         "strings")
    if len(types) > 1:
        raise BadRequest("3604", "Multiple channel_type_ids can only be specified when the "
                         "recipient_type is 'label'")
    if not isinstance(data.get("body"), str) or not data["body"].strip():
        raise BadRequest("3602", "Sending a message requires a body or attachments to be "
                         "specified")


def _basic(value: str) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password
