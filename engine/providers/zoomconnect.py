"""ZoomConnect (SMS Messenger REST API): account type ``zoomconnect``.

Wire format (seed 003, the swagger, providers.md §1 and its "engine choices" row):

* auth: headers ``email`` and ``token`` on every request
* send: ``POST {base}/api/rest/v1/sms/send`` ``{recipientNumber, message, dataField[,
  campaign]}`` → ``{messageId, error}``; with ``bulk: true``, ``POST .../sms/send-bulk``
  ``{sendSmsRequests: [...]}`` (up to ``batch_size``) → ``{sendSmsResponses: [{messageId,
  error}]}``
* errors: 400 ``RestErrorDTO {code, status, message, developerMessage}`` (code 2 invalid
  mobile number, 3 empty message), 401, 403, 404: rejected. 429: retry. 5xx and timeouts:
  unknown, because ZoomConnect has no idempotency key. Our message id travels in
  ``dataField``, so an operator can reconcile an ``unknown`` message with
  ``GET /api/rest/v1/messages/all?dataField=<id>`` before resending it.
* delivery reports and replies are POSTed to the URL set in the dashboard; we give
  ``{public_url}/webhooks/{account}?secret=...`` because ZoomConnect sends no custom header
* polling: ``GET .../messages/{messageId}`` (``messageStatus``); balance:
  ``GET .../account/balance`` (``creditBalance``)

What rests on a guess [G], so the adapter is tolerant there:

* DLR parameter names (``messageId``, ``status``, optional ``dataField``) and their
  encoding: query or form parameters, JSON accepted too; unknown status values are kept
  (``status`` None, ``provider_status`` the raw word), never an error
* bulk results are positional; a count that does not match the request makes every
  message ``unknown``; a bulk 400 means nothing was taken, so each message is then sent
  on its own to learn which one was refused
* a 200 with a non-empty ``error`` is a rejection (code ``rejected``)
* ``SCHEDULED`` and ``UNKNOWN`` mean accepted and not final, so they map to ``sent``
  (our ``queued`` means "not yet handed over", which these are not); ``FAILED_REFUNDED``
  (credit refunded: the network did not deliver) maps to ``undelivered``; ``FAILED`` and
  ``FAILED_OPTOUT`` to ``failed``; the failure word is kept as ``error_code``
* ZoomConnect sends no event id, so receipts carry none (the receipts layer dedupes on
  message id plus status) and no timestamp (its ``date`` has no documented time zone)
* replies that are one opt-out keyword (STOP, ...) or opt-in keyword (START, ...) also
  yield an OptChange; the sender's number is made E.164 by prefixing ``+`` to digits
* ZoomConnect has no sender field, so ``Outbound.sender`` is not sent, and it picks the
  encoding itself from the text, so ``Outbound.encoding`` is not sent either
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web
from pydantic import Field, SecretStr
from yarl import URL

from engine.errors import ProviderPermanentError
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

#: ZoomConnect's message statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "SCHEDULED": MessageStatus.SENT,
    "UNKNOWN": MessageStatus.SENT,
    "SENT": MessageStatus.SENT,
    "DELIVERED": MessageStatus.DELIVERED,
    "FAILED": MessageStatus.FAILED,
    "FAILED_REFUNDED": MessageStatus.UNDELIVERED,
    "FAILED_OPTOUT": MessageStatus.FAILED,
}
#: statuses whose word is also the error code
FAILURES = frozenset({"FAILED", "FAILED_REFUNDED", "FAILED_OPTOUT"})

API = "/api/rest/v1"


class ZoomConnectAccount(AccountBase):
    """A ZoomConnect account: the login email and a REST API token."""

    default_base_url: ClassVar[str] = "https://www.zoomconnect.com/app"

    type: Literal["zoomconnect"] = "zoomconnect"
    email: str
    token: SecretStr
    bulk: bool = False
    batch_size: int = Field(default=100, ge=1, le=1000)
    campaign: str | None = None  # ZoomConnect's campaign label on every message


class ZoomConnectAdapter(Adapter[ZoomConnectAccount]):
    """Client of the ZoomConnect REST API."""

    account_model = ZoomConnectAccount
    webhook_secret_in = "query"
    webhook_secret_name = "secret"
    supports_polling = True

    def __init__(
        self, name: str, account: ZoomConnectAccount, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, account, session)
        self.max_batch = account.batch_size if account.bulk else 1

    def auth_headers(self) -> dict[str, str]:
        """``email`` and ``token`` headers."""
        return {"email": self.account.email, "token": self.account.token.get_secret_value()}

    def _request_body(self, message: Outbound) -> dict[str, str]:
        body = {"recipientNumber": message.to, "message": message.body,
                "dataField": str(message.message_id)}
        if self.account.campaign:
            body["campaign"] = self.account.campaign
        return body

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /api/rest/v1/sms/send``."""
        result = await self._request("POST", f"{API}/sms/send", json=self._request_body(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        return _item_result(result.json())

    async def send_many(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """``POST /api/rest/v1/sms/send-bulk``; results are positional."""
        body = {"sendSmsRequests": [self._request_body(m) for m in batch]}
        result = await self._request("POST", f"{API}/sms/send-bulk", json=body)
        if isinstance(result, SendResult):
            return [result] * len(batch)
        if result.status == 400:  # nothing was taken: find the bad one(s) singly
            return await self._send_singly(batch)
        if not result.ok:
            return [_error(result)] * len(batch)
        data = result.json()
        items = data.get("sendSmsResponses") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(batch):
            return [SendResult.unknown("bad_response", "sendSmsResponses do not match")] * len(
                batch
            )
        return [_item_result(item) for item in items]

    async def _send_singly(self, batch: Sequence[Outbound]) -> list[SendResult]:
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(message: Outbound) -> SendResult:
            async with limit:
                return await self.send_one(message)

        return list(await asyncio.gather(*(one(m) for m in batch)))

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A delivery report (``status``) or a reply (``from``, ``message``)."""
        params = self._query_without_secret(query)
        data = decode_body(content_type, body)
        if not isinstance(data, dict):
            raise MalformedWebhook("expected parameters or a JSON object")
        params.update({str(k): str(v) for k, v in data.items() if v is not None})
        if params.get("status"):
            return WebhookEvents(receipts=(_receipt(params),))
        if params.get("from") and "message" in params:
            reply = Inbound(as_e164(params["from"]), params["message"],
                            params.get("messageId") or None,
                            params.get("repliedToMessageId") or None, params)
            opt = opt_change_for_reply(reply.from_, reply.text, params)
            return WebhookEvents(inbound=(reply,), opt_changes=(opt,) if opt else ())
        raise MalformedWebhook("neither a delivery report (status) nor a reply (from, message)")

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """``GET /api/rest/v1/messages/{id}`` for each id, ``concurrency`` at a time."""
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(provider_id: str) -> Receipt | None:
            async with limit:
                result = await self._request("GET", f"{API}/messages/{provider_id}")
            if isinstance(result, SendResult) or not result.ok:
                return None
            return _polled(provider_id, result.json())

        found = await asyncio.gather(*(one(i) for i in provider_message_ids))
        return [receipt for receipt in found if receipt is not None]

    async def balance(self) -> Decimal | None:
        """``GET /api/rest/v1/account/balance`` → ``creditBalance``."""
        data = await self._get_json(f"{API}/account/balance")
        value = data.get("creditBalance") if isinstance(data, dict) else None
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:
            raise ProviderPermanentError(f"{self.name}: balance without creditBalance") from exc


def _item_result(item: Any) -> SendResult:
    """One ``{messageId, error}``."""
    if not isinstance(item, dict):
        return SendResult.unknown("bad_response", "expected {messageId, error}")
    if item.get("error"):
        return SendResult.rejected("rejected", str(item["error"]))
    if item.get("messageId"):
        return SendResult.accepted(str(item["messageId"]))
    return SendResult.unknown("bad_response", "neither messageId nor error")


def _error(response: Response) -> SendResult:
    """A 4xx: RestErrorDTO's code on a 400, else the HTTP status."""
    data = response.json()
    dto = data if isinstance(data, dict) else {}
    detail = dto.get("message") or dto.get("developerMessage") or response.body[:200].decode(
        errors="replace"
    )
    code = dto.get("code") if response.status == 400 else None
    if 400 <= response.status < 500:
        return SendResult.rejected(str(code if code is not None else response.status), detail)
    return SendResult.unknown(str(response.status), detail)  # 1xx/3xx: not a documented answer


def _receipt(params: dict[str, str]) -> Receipt:
    provider_id, data_field = params.get("messageId") or None, params.get("dataField", "")
    if provider_id is None and not data_field:
        raise MalformedWebhook("delivery report without messageId or dataField")
    word = params["status"].strip().upper()
    if word not in STATUSES:
        log.warning("unknown ZoomConnect status %r kept unmapped", word,
                    extra={"provider": "zoomconnect"})
    return Receipt(
        provider_message_id=provider_id,
        message_id=int(data_field) if data_field.isdigit() else None,
        status=STATUSES.get(word),
        provider_status=params["status"],
        error_code=word if word in FAILURES else None,
        raw=params,
    )


def _polled(provider_id: str, data: Any) -> Receipt | None:
    if not isinstance(data, dict) or not isinstance(data.get("messageStatus"), str):
        return None
    word = data["messageStatus"].strip().upper()
    data_field = str(data.get("userDataField") or "")
    return Receipt(
        provider_message_id=str(data.get("messageId") or provider_id),
        message_id=int(data_field) if data_field.isdigit() else None,
        status=STATUSES.get(word),
        provider_status=data["messageStatus"],
        error_code=word if word in FAILURES else None,
        raw=data,
    )


# --- ZoomConnect as the simulator plays it -------------------------------------------------

_NUMBER = re.compile(r"^(\+?[1-9]\d{9,14}|0\d{9})$")
_SIM_STATUS = {"sent": "SENT", "delivered": "DELIVERED", "undelivered": "FAILED_REFUNDED",
               "failed": "FAILED"}


class ZoomConnectRoutes(ProviderRoutes):
    """ZoomConnect's send, bulk, message lookup and balance, with its DLRs and replies."""

    family = "zoomconnect"
    receipts_per_post = 1
    keeps_messages = True

    def routes(self) -> list[web.RouteDef]:
        """The documented paths under the base URL's root."""
        return [
            web.post(f"{API}/sms/send", self.send_single),
            web.post(f"{API}/sms/send-bulk", self.send_bulk),
            web.get(f"{API}/messages/{{messageId}}", self._message),
            web.get(f"{API}/account/balance", self._balance),
        ]

    def authorized(self, request: web.Request) -> bool:
        """``email`` + ``token`` headers, Basic email:token, or (testing) query params."""
        email, token = request.headers.get("email"), request.headers.get("token")
        if not (email and token):
            email, token = _basic(request.headers.get("Authorization", ""))
        if not (email and token):
            email, token = request.query.get("email"), request.query.get("token")
        wanted = self.settings.require_token
        return bool(email and token) and (wanted is None or token == wanted)

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """WebServiceSendSmsRequest, or WebServiceSendSmsRequests for bulk."""
        data = _json_object(body)
        if not bulk:
            return [self._item(data)]
        requests = data.get("sendSmsRequests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("1", "sendSmsRequests must be a non-empty list")
        return [self._item(r) for r in requests]

    @staticmethod
    def _item(data: Any) -> SendItem:
        if not isinstance(data, dict):
            return SendItem("", "", None, Rejection("1", "Invalid request"))
        number, text = data.get("recipientNumber"), data.get("message")
        ref = None if data.get("dataField") is None else str(data["dataField"])
        if not isinstance(number, str) or not _NUMBER.match(number):
            return SendItem(str(number), "", ref, Rejection("2", "Invalid mobile number"))
        if not isinstance(text, str) or not text.strip():
            return SendItem(number, "", ref, Rejection("3", "Message cannot be empty"))
        return SendItem(number, text, ref)

    def blocked(self, item: SendItem) -> Rejection:
        """Code 2, as ZoomConnect answers for a number it will not send to."""
        return Rejection("2", "Invalid mobile number")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """RestErrorDTO."""
        return json_response({
            "code": int(code) if code.isdigit() else status,
            "status": HTTPStatus(status).name,
            "message": detail,
            "developerMessage": detail,
            "moreInfoUrl": None,
        }, status)

    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """WebServiceSendSmsResponse(s); a refused single message is a 400."""
        if not bulk and isinstance(outcomes[0], Rejection):
            return self.error(400, outcomes[0].code, outcomes[0].detail)
        items = [{"messageId": None, "error": o.detail} if isinstance(o, Rejection)
                 else {"messageId": o.id, "error": None} for o in outcomes]
        return json_response({"sendSmsResponses": items} if bulk else items[0])

    def render(self, events: Sequence[SimEvent]) -> Post:
        """One form-encoded DLR or reply per call, to ``webhook_url?secret=``."""
        (event,) = events
        assert self.settings.webhook_url is not None
        url = URL(self.settings.webhook_url)
        if self.settings.webhook_secret:
            url = url.update_query(secret=self.settings.webhook_secret)
        if event.kind == "inbound":
            params = {"from": event.extra.get("from", ""), "message": event.extra.get("text", ""),
                      "messageId": event.id,
                      "repliedToMessageId": event.extra.get("in_reply_to", ""),
                      "date": event.at.strftime("%Y%m%d%H%M")}
        else:
            assert event.message is not None
            params = {"messageId": event.message.id, "status": _SIM_STATUS[event.kind],
                      "dataField": event.message.reference or ""}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return Post(str(url), headers, urlencode(params).encode())

    async def _message(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "401", "Unauthorized")
        message = self.sim.messages.get((self.family, request.match_info["messageId"]))
        if message is None:
            return self.error(404, "404", "Message not found")
        status = message.status_at(asyncio.get_running_loop().time())
        return json_response({
            "messageId": message.id, "messageStatus": _SIM_STATUS[status],
            "messageType": "OUTBOUND", "toNumber": message.to, "message": message.body,
            "userDataField": message.reference, "numberOfMessages": 1,
        })

    async def _balance(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "401", "Unauthorized")
        return json_response({"creditBalance": float(self.sim.credit)})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except ValueError as exc:
        raise BadRequest("1", "Invalid request body") from exc
    if not isinstance(data, dict):
        raise BadRequest("1", "Invalid request body")
    return data


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        email, _, token = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return email, token
