"""Carium's "courier" texts service (JSON:API): account type ``courier``.

Wire format (seed 004, providers.md §5 and its "engine choices" row):

* auth: ``Authorization: Bearer <token>`` on every request
* send: ``POST {base}/v1/texts/`` ``{data: {type: texts, attributes: {account-id,
  number-id, organization-id (when configured), target (E.164), message,
  callback-status-url, callback-json}}}`` → 201 ``{data: {id, type: texts, attributes:
  {status: accepted, error, ...}}}``. ``callback-status-url`` is this account's webhook URL
  with ``?secret=`` (courier lets us name a URL, not a header), built from the engine's
  public URL (``webhooks.public_url``, passed by ``adapter_for``); ``callback-json`` is an
  object (the seed types it ``{}``) carrying ``{"message_id": <our id>}``.
* errors: JSON:API ``{errors: [{status, code, detail, title?, source, meta}]}``; a 4xx is
  ``rejected`` with the first error's code and the details; 429 ``retry``; 5xx and
  timeouts ``unknown`` (there is no idempotency key)
* status callbacks: courier POSTs a JSON:API ``texts`` document to the
  ``callback-status-url`` of each text; ``data.id`` is its id, ``data.attributes.status``
  the status, ``attributes.error`` the reason of a failure

What rests on a guess [G], so the adapter is tolerant there:

* the default base URL ``https://api.carium.com/courier``: the seed has no ``servers`` and
  Carium's public sources only show service-relative paths (``/courier/v1/texts``); set
  ``base_url`` for your deployment
* the callback's shape (a ``texts`` document) and where it echoes ``callback-json``:
  ``attributes.callback-json``, a top-level ``callback-json`` or ``meta``, or a top-level
  ``message_id`` (an object or a JSON string); without it, receipts match on ``data.id``
* statuses, Twilio-like: ``accepted``, ``queued``, ``sending`` and ``sent`` → sent (the
  provider has the message; our ``queued`` means "not yet handed over", as for
  ZoomConnect's SCHEDULED); ``delivered``, ``undelivered``, ``failed``; anything else is
  logged and kept with status None
* a 201 whose ``status`` is ``failed`` or ``undelivered`` is a rejection (``error`` as the
  detail); ``error-code`` is read as the error code where present, else the status word
* ``last-modified-at`` is the time of the status; callbacks carry no event id, so
  receipts carry none (the receipts layer dedupes on message id plus status)
* replies: the seed's ``callback-url`` (for responses) has no documented payload, so the
  adapter does not ask for it and reads no replies
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from engine.providers.base import (
    AccountBase,
    Adapter,
    MalformedWebhook,
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
    json_response,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: courier's text statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "accepted": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
}
#: statuses whose word is the error code when courier gives none
FAILURES = frozenset({"undelivered", "failed"})

TEXTS = "/v1/texts/"


class CourierAccount(AccountBase):
    """A courier account: a bearer token and the text account and number to send from."""

    default_base_url: ClassVar[str] = "https://api.carium.com/courier"

    type: Literal["courier"] = "courier"
    token: SecretStr
    account_id: str
    number_id: str
    organization_id: str | None = None


class CourierAdapter(Adapter[CourierAccount]):
    """Client of courier's ``texts`` resource."""

    account_model = CourierAccount
    webhook_secret_in = "query"
    webhook_secret_name = "secret"

    def __init__(
        self, name: str, account: CourierAccount, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, account, session)
        self._warned = False

    def auth_headers(self) -> dict[str, str]:
        """A bearer token."""
        return {"Authorization": f"Bearer {self.account.token.get_secret_value()}"}

    def _document(self, message: Outbound) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "account-id": self.account.account_id,
            "number-id": self.account.number_id,
            "target": as_e164(message.to),
            "message": message.body,
        }
        if self.account.organization_id:
            attributes["organization-id"] = self.account.organization_id
        if self.public_url:
            attributes["callback-status-url"] = self.webhook_url(self.public_url)
            attributes["callback-json"] = {"message_id": message.message_id}
        elif not self._warned:
            self._warned = True
            log.warning("%s: no webhooks.public_url, so courier cannot report statuses",
                        self.name, extra={"provider": self.name})
        return {"data": {"type": "texts", "attributes": attributes}, "meta": {}}

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /v1/texts/``."""
        result = await self._request("POST", TEXTS, json=self._document(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        return _created(result.json())

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A ``texts`` document posted to ``callback-status-url``."""
        data = decode_body(content_type or "application/json", body)
        resource = data.get("data") if isinstance(data, dict) else None
        if not isinstance(resource, dict):
            raise MalformedWebhook("expected a JSON:API document {data: {...}}")
        if resource.get("type", "texts") != "texts":
            raise MalformedWebhook(f"expected a texts resource, got {resource.get('type')!r}")
        attributes = resource.get("attributes")
        if not isinstance(attributes, dict) or not isinstance(attributes.get("status"), str):
            raise MalformedWebhook("texts document without attributes.status")
        provider_id, our_id = _opt_str(resource.get("id")), _our_id(data, attributes)
        if provider_id is None and our_id is None:
            raise MalformedWebhook("texts document without an id or our callback-json")
        return WebhookEvents(receipts=(_receipt(provider_id, our_id, attributes, data),))


def _created(data: Any) -> SendResult:
    """A 201 document: ``data.id``, unless its status already says it failed."""
    resource = data.get("data") if isinstance(data, dict) else None
    if not isinstance(resource, dict) or not resource.get("id"):
        return SendResult.unknown("bad_response", "a 2xx without data.id")
    attributes = resource.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    word = str(attributes.get("status") or "").strip().lower()
    if word in FAILURES:
        return SendResult.rejected(str(attributes.get("error-code") or word),
                                   _opt_str(attributes.get("error")))
    return SendResult.accepted(str(resource["id"]))


def _error(response: Response) -> SendResult:
    """JSON:API ``errors``: a 4xx is rejected with the first code and every detail."""
    data = response.json()
    found = data.get("errors") if isinstance(data, dict) else None
    errors = [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []
    code = next((str(e["code"]) for e in errors if e.get("code")), str(response.status))
    details = [str(e.get("detail") or e.get("title")) for e in errors
               if e.get("detail") or e.get("title")]
    detail = "; ".join(details) or response.body[:200].decode(errors="replace")
    if 400 <= response.status < 500:
        return SendResult.rejected(code, detail)
    return SendResult.unknown(code, detail)  # 1xx/3xx: not a documented answer


def _our_id(data: dict[str, Any], attributes: dict[str, Any]) -> int | None:
    """Our message id, from the ``callback-json`` courier echoes (where it does [G])."""
    for echoed in (attributes.get("callback-json"), data.get("callback-json"),
                   data.get("meta"), data):
        if isinstance(echoed, str):
            try:
                echoed = orjson.loads(echoed)
            except orjson.JSONDecodeError:
                continue
        value = echoed.get("message_id") if isinstance(echoed, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _receipt(
    provider_id: str | None, our_id: int | None, attributes: dict[str, Any], raw: dict[str, Any]
) -> Receipt:
    word = attributes["status"].strip().lower()
    if word not in STATUSES:
        log.warning("unknown courier status %r kept unmapped", word,
                    extra={"provider": "courier"})
    failed = word in FAILURES
    return Receipt(
        provider_message_id=provider_id,
        message_id=our_id,
        status=STATUSES.get(word),
        provider_status=attributes["status"],
        error_code=_opt_str(attributes.get("error-code")) or (word if failed else None),
        error_detail=_opt_str(attributes.get("error")) or _opt_str(raw.get("error")),
        occurred_at=_timestamp(attributes.get("last-modified-at")),
        raw=raw,
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- courier as the simulator plays it -----------------------------------------------------

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_REQUIRED = ("account-id", "number-id", "target", "message")
_SIM_ERRORS = {
    "undelivered": "The handset was unreachable",
    "failed": "The carrier refused the message",
}
#: the shared machinery's error codes, in Carium's PascalCase (guessed names)
_ERROR_CODES = {"unauthorized": "Unauthorized", "rate_limited": "TooManyRequests",
                "internal_error": "InternalServerError"}


class CourierRoutes(ProviderRoutes):
    """courier's ``POST /v1/texts/``, with status callbacks to each text's
    ``callback-status-url`` (``webhook_url``, if set, serves texts naming none)."""

    family = "courier"
    callback_per_request = True

    def routes(self) -> list[web.RouteDef]:
        """The texts collection."""
        return [web.post(TEXTS, self.send_single)]

    def authorized(self, request: web.Request) -> bool:
        """``Authorization: Bearer <token>`` (any, or the required one)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        wanted = self.settings.require_token
        return scheme.lower() == "bearer" and bool(token) and wanted in (None, token)

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """A JSON:API ``texts`` document."""
        resource = _document(body).get("data")
        if not isinstance(resource, dict) or resource.get("type") != "texts":
            raise BadRequest("ValidationError", "/data: expected a texts resource")
        attributes = resource.get("attributes")
        if not isinstance(attributes, dict):
            raise BadRequest("ValidationError", "/data/attributes: required")
        for name in _REQUIRED:
            if not isinstance(attributes.get(name), str) or not attributes[name]:
                raise BadRequest("ValidationError", f"/data/attributes/{name}: required")
        callback, echo = attributes.get("callback-status-url"), attributes.get("callback-json")
        if callback is not None and not isinstance(callback, str):
            raise BadRequest("ValidationError", "/data/attributes/callback-status-url: a URL")
        if echo is not None and not isinstance(echo, dict):
            raise BadRequest("ValidationError", "/data/attributes/callback-json: an object")
        ref = None if echo is None else orjson.dumps(echo).decode()
        target = attributes["target"]
        if not _E164.match(target):
            return [SendItem(target, "", ref, Rejection(
                "InvalidPhoneNumber", "target must be an E.164 number"), callback)]
        return [SendItem(target, attributes["message"], ref, None, callback)]

    def blocked(self, item: SendItem) -> Rejection:
        """``BlockedTarget`` [G]."""
        return Rejection("BlockedTarget", "the number does not accept messages")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """JSON:API ``{errors: [{status, code, detail, source, meta}]}``."""
        return json_response({"errors": [{
            "status": status, "code": _ERROR_CODES.get(code, code), "detail": detail,
            "source": {}, "meta": {},
        }]}, status)

    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """201 with the new text; a refused text is a 400."""
        (outcome,) = outcomes
        if isinstance(outcome, Rejection):
            return self.error(400, outcome.code, outcome.detail)
        return json_response({"data": _resource(outcome, "accepted", datetime.now(UTC)),
                              "meta": {}}, 201)

    def new_id(self, serial: int) -> str:
        """A UUID, as courier's ids are."""
        return str(uuid.UUID(int=serial))

    def render(self, events: Sequence[SimEvent]) -> Post:
        """One ``texts`` document per call, to the text's ``callback-status-url``."""
        (event,) = events
        headers = {"Content-Type": "application/json"}
        if event.kind == "inbound":  # the seed documents no reply payload: a bare guess
            body = {"data": {"type": "texts", "attributes": {
                "status": "received", "from": event.extra.get("from"),
                "message": event.extra.get("text")}}}
            return Post(self._fallback_url(), headers, orjson.dumps(body))
        assert event.message is not None
        url = event.message.callback or self._fallback_url()
        body = {"data": _resource(event.message, event.kind, event.at), "meta": {}}
        return Post(url, headers, orjson.dumps(body))

    def _fallback_url(self) -> str:
        assert self.settings.webhook_url is not None
        url = URL(self.settings.webhook_url)
        if self.settings.webhook_secret:
            url = url.update_query(secret=self.settings.webhook_secret)
        return str(url)


def _resource(message: SimMessage, status: str, at: datetime) -> dict[str, Any]:
    stamp = at.astimezone(UTC).isoformat()
    return {"id": message.id, "type": "texts", "attributes": {
        "status": status, "target": message.to, "message": message.body,
        "from": "+15550100000", "error": _SIM_ERRORS.get(status),
        "callback-status-url": message.callback, "callback-url": None,
        "callback-json": None if message.reference is None else orjson.loads(message.reference),
        "twilio-sid": None, "created-at": stamp, "last-modified-at": stamp,
    }}


def _document(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("InvalidJson", "the body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("ValidationError", "expected a JSON:API document")
    return data
