"""ZoomConnect (SMS Messenger REST API): account type ``zoomconnect``.

Wire format (seed 003, the swagger, providers.md §1 and its "engine choices" row):

* auth: headers ``email`` and ``token`` on every request
* send: ``POST {base}/api/rest/v1/sms/send-bulk`` ``{sendSmsRequests: [{recipientNumber,
  message, dataField[, campaign]}]}`` (up to ``batch_size``) → ``{sendSmsResponses:
  [{messageId, error}]}``, positional; ``bulk: false``, or a batch of one, uses
  ``POST .../sms/send`` ``{recipientNumber, message, dataField}`` → ``{messageId, error}``
* errors: 400 ``RestErrorDTO {code, status, message, developerMessage}`` (code 2 invalid
  mobile number, 3 empty message), 404: rejected; 401, 403 (bad credentials, a suspended
  account) and 402 (no credit): the account's (``account``, engine.accounts). 429: retry.
  5xx and timeouts: unknown, because ZoomConnect has no idempotency key. Our message id travels in
  ``dataField``, so an operator can reconcile an ``unknown`` message with
  ``GET /api/rest/v1/messages/all?dataField=<id>`` before resending it.
* delivery reports (``status``, ``messageId``) and replies (``from``, ``message``,
  ``messageId``, ``repliedToMessageId``, ``dataField`` of the message replied to) are POSTed
  to the URLs set in the dashboard. ZoomConnect appends its own query to the URL it is
  given (the seed: ``report.php? &status=DELIVERED &messageId=…``), so the secret goes in
  the path: :meth:`ZoomConnectAdapter.webhook_url` (what ``engine providers subscribe``
  prints) is ``{public_url}/webhooks/{account}/{secret}``
* polling: ``GET .../messages/{messageId}`` (``messageStatus``); balance:
  ``GET .../account/balance`` (``creditBalance``), also the account's ``check`` (no credit
  left fails it with the reason ``credit``)

Where the seed is silent [G], the adapter accepts every plausible variant:

* how the parameters are joined to the URL: ``?``, ``&`` or ``?&``, with or without the
  stray spaces of the seed's example, in the query or as form fields (JSON is read too).
  With the secret in the path, the webhook listener hands the adapter whatever followed
  the secret after a ``&``, as query parameters. The older ``?secret=`` form keeps
  working: a ``?`` ZoomConnect glues onto the secret (``secret=s?&status=…`` or
  ``secret=s?status=…``) is cut off and what follows it read as parameters
* DLR parameter names beyond ``messageId`` and ``status``: ``dataField`` (our id) and a
  recipient number (``recipientNumber``, ``toNumber``, ``to``, ``msisdn``) when present;
  unknown status values are kept (``status`` None, ``provider_status`` the raw word)
* the vocabulary (issue 17): ``SCHEDULED``, ``UNKNOWN``, ``SENT`` → ``sent`` (accepted,
  not final); ``DELIVERED`` → ``delivered``; ``FAILED``, ``FAILED_REFUNDED`` and
  ``FAILED_OPTOUT`` → ``undelivered`` (ZoomConnect took the message, then reported it not
  delivered), the word kept as ``error_code``. ``FAILED_OPTOUT`` is flagged ``opt_out`` on
  its receipt (polled or reported), so the reconciler suppresses the number of the message
  it settles on, on that message's channel, whatever this process remembers (a restart
  loses nothing). It also yields an opt-out (:class:`OptChange`) at once where the number
  is known here: from the report when it names one, else from the numbers this process
  sent to recently (a bounded in-process map of ZoomConnect's id to the number; the
  adapter never reads the database).
* bulk results are positional; a count that does not match the request makes every
  message ``unknown``; a bulk 400 means nothing was taken, so each message is then sent
  on its own to learn which one was refused. A 403 or 404 on ``send-bulk`` means the
  account may not use it: the adapter logs it once and sends singly from then on.
* a 200 with a non-empty ``error`` is a rejection (code ``rejected``)
* ZoomConnect sends no event id, so receipts carry none (the receipts layer dedupes on
  message id plus status) and no timestamp (its ``date`` has no documented time zone)
* replies that are one opt-out keyword (STOP, ...) or opt-in keyword (START, ...) also
  yield an OptChange; the sender's number is made E.164 by prefixing ``+`` to digits.
  A reply's ``dataField`` (our id of the message replied to) stays in its raw payload.
* ZoomConnect has no sender field, so ``Outbound.sender`` is not sent, and it picks the
  encoding itself from the text, so ``Outbound.encoding`` is not sent either
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote

import aiohttp
from pydantic import Field, SecretStr

from engine.errors import ProviderPermanentError
from engine.providers.base import (
    AccountBase,
    AccountReason,
    Adapter,
    CheckFailed,
    Inbound,
    MalformedWebhook,
    OptChange,
    Outbound,
    Receipt,
    Response,
    SendResult,
    WebhookEvents,
    as_e164,
    client_error,
    decode_body,
    opt_change_for_reply,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: ZoomConnect's message statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "SCHEDULED": MessageStatus.SENT,
    "UNKNOWN": MessageStatus.SENT,
    "SENT": MessageStatus.SENT,
    "DELIVERED": MessageStatus.DELIVERED,
    "FAILED": MessageStatus.UNDELIVERED,
    "FAILED_REFUNDED": MessageStatus.UNDELIVERED,
    "FAILED_OPTOUT": MessageStatus.UNDELIVERED,
}
#: statuses whose word is also the error code
FAILURES = frozenset({"FAILED", "FAILED_REFUNDED", "FAILED_OPTOUT"})
#: the failure that means the recipient opted out at ZoomConnect
OPT_OUT = "FAILED_OPTOUT"
#: where a delivery report may name the recipient [G]
NUMBER_KEYS = ("recipientNumber", "toNumber", "to", "msisdn")
#: how many ZoomConnect ids → numbers this process remembers, for FAILED_OPTOUT reports
REMEMBERED = 100_000

API = "/api/rest/v1"


class ZoomConnectAccount(AccountBase):
    """A ZoomConnect account: the login email and a REST API token."""

    default_base_url: ClassVar[str] = "https://www.zoomconnect.com/app"

    type: Literal["zoomconnect"] = "zoomconnect"
    email: str
    token: SecretStr
    bulk: bool = True
    batch_size: int = Field(default=100, ge=1, le=1000)
    campaign: str | None = None  # ZoomConnect's campaign label on every message


class ZoomConnectAdapter(Adapter[ZoomConnectAccount]):
    """Client of the ZoomConnect REST API."""

    account_model = ZoomConnectAccount
    # the older ``?secret=`` form; the path form is checked by the webhook listener
    webhook_secret_in = "query"
    webhook_secret_name = "secret"
    supports_polling = True

    def __init__(
        self, name: str, account: ZoomConnectAccount, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, account, session)
        self.max_batch = account.batch_size if account.bulk else 1
        self._bulk_refused = False
        self._numbers: OrderedDict[str, str] = OrderedDict()

    def auth_headers(self) -> dict[str, str]:
        """``email`` and ``token`` headers."""
        return {"email": self.account.email, "token": self.account.token.get_secret_value()}

    def _request_body(self, message: Outbound) -> dict[str, str]:
        body = {
            "recipientNumber": message.to,
            "message": message.body,
            "dataField": str(message.message_id),
        }
        if self.account.campaign:
            body["campaign"] = self.account.campaign
        return body

    def _remember(self, message: Outbound, result: SendResult) -> SendResult:
        """Keep ZoomConnect's id → number, so a FAILED_OPTOUT report can name the number."""
        if result.provider_message_id is not None:
            self._numbers[result.provider_message_id] = message.to
            if len(self._numbers) > REMEMBERED:
                self._numbers.popitem(last=False)
        return result

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /api/rest/v1/sms/send``."""
        result = await self._request("POST", f"{API}/sms/send", json=self._request_body(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        return self._remember(message, _item_result(result.json()))

    async def send_many(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """``POST /api/rest/v1/sms/send-bulk``; results are positional."""
        if self._bulk_refused:
            return await self._send_singly(batch)
        body = {"sendSmsRequests": [self._request_body(m) for m in batch]}
        result = await self._request("POST", f"{API}/sms/send-bulk", json=body)
        if isinstance(result, SendResult):
            return [result] * len(batch)
        if result.status in (403, 404):  # this account may not use send-bulk
            log.warning(
                "%s: send-bulk answered %d, sending singly from now on",
                self.name,
                result.status,
                extra={"provider": self.name},
            )
            self._bulk_refused = True
            return await self._send_singly(batch)
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
        return [self._remember(m, _item_result(item)) for m, item in zip(batch, items, strict=True)]

    async def _send_singly(self, batch: Sequence[Outbound]) -> list[SendResult]:
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(message: Outbound) -> SendResult:
            async with limit:
                return await self.send_one(message)

        return list(await asyncio.gather(*(one(m) for m in batch)))

    # webhooks

    def webhook_url(self, public_url: str) -> str:
        """``{public_url}/webhooks/{account}/{secret}``: ZoomConnect appends its own query."""
        url = f"{public_url.rstrip('/')}/webhooks/{quote(self.name, safe='')}"
        secret = self.account.webhook_secret
        return url if secret is None else f"{url}/{quote(secret.get_secret_value(), safe='')}"

    def webhook_authentic(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """The ``?secret=`` form, with whatever ZoomConnect glued on after a ``?`` cut off."""
        secret = self.account.webhook_secret
        if secret is None:
            return True
        given = query.get(self.webhook_secret_name)
        if given is None:
            return False
        given = given.partition("?")[0].strip()
        return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A delivery report (``status``) or a reply (``from``, ``message``)."""
        params = self.callback_params(content_type, body, query)
        if params.get("status"):
            receipt = _receipt(params)
            opt = self._opt_out(receipt, params)
            return WebhookEvents(receipts=(receipt,), opt_changes=(opt,) if opt else ())
        if params.get("from") and "message" in params:
            reply = Inbound(
                as_e164(params["from"]),
                params["message"],
                params.get("messageId") or None,
                params.get("repliedToMessageId") or None,
                params,
            )
            opt = opt_change_for_reply(reply.from_, reply.text, params)
            return WebhookEvents(inbound=(reply,), opt_changes=(opt,) if opt else ())
        raise MalformedWebhook("neither a delivery report (status) nor a reply (from, message)")

    def callback_params(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> dict[str, str]:
        """Every parameter of a callback, however ZoomConnect joined them; never the secret."""
        params: dict[str, str] = {}
        for key, value in query.items():
            if key == self.webhook_secret_name:  # ``s?&status=…`` or ``s?status=…``
                _, glued, tail = value.partition("?")
                if glued:
                    _merge(params, parse_qsl(tail, keep_blank_values=True))
            else:
                _merge(params, [(key, value)])
        _merge(params, _body_pairs(content_type, body))
        return params

    def _opt_out(self, receipt: Receipt, params: Mapping[str, str]) -> OptChange | None:
        """The opt-out a FAILED_OPTOUT report means, where its number is known."""
        if receipt.error_code != OPT_OUT:
            return None
        number = next((params[k] for k in NUMBER_KEYS if params.get(k)), None)
        if number is None and receipt.provider_message_id is not None:
            number = self._numbers.get(receipt.provider_message_id)
        if number is None:  # the reconciler suppresses it from the message (opt_out)
            log.info(
                "%s: FAILED_OPTOUT for message %s, whose number is unknown here: "
                "suppressed once the receipt is applied",
                self.name,
                receipt.provider_message_id,
                extra={"provider": self.name},
            )
            return None
        return OptChange(as_e164(number), True, "sms", dict(params))

    # lookups

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """``GET /api/rest/v1/messages/{id}`` for each id, ``concurrency`` at a time."""
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(provider_id: str) -> Receipt | None:
            async with limit:
                result = await self._request("GET", f"{API}/messages/{quote(provider_id)}")
            if isinstance(result, SendResult) or not result.ok:
                return None
            return _polled(provider_id, result.json())

        found = await asyncio.gather(*(one(i) for i in provider_message_ids))
        return [receipt for receipt in found if receipt is not None]

    def check_path(self) -> str:
        """The balance."""
        return f"{API}/account/balance"

    def check_summary(self, data: Any) -> str:
        """``creditBalance``; none left fails the check (reason ``credit``)."""
        value = data.get("creditBalance") if isinstance(data, dict) else None
        try:
            credit = Decimal(str(value))
        except InvalidOperation:
            return ""
        if credit <= 0:
            raise CheckFailed(f"{self.name}: credit balance {credit}", AccountReason.CREDIT)
        return f"credit balance {credit}"

    async def balance(self) -> Decimal | None:
        """``GET /api/rest/v1/account/balance`` → ``creditBalance``."""
        data = await self._get_json(f"{API}/account/balance")
        value = data.get("creditBalance") if isinstance(data, dict) else None
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:
            raise ProviderPermanentError(f"{self.name}: balance without creditBalance") from exc


def _merge(params: dict[str, str], pairs: Sequence[tuple[str, str]]) -> None:
    """Add pairs, keys and values trimmed of the spaces and joiners the seed shows."""
    for key, value in pairs:
        name = key.strip().lstrip("?&").strip()
        if name:
            params[name] = value.strip()


def _body_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """Form fields (a leading ``?`` or ``&`` allowed), or a JSON object's members."""
    text = body.strip()
    if not text:
        return []
    ctype = content_type.partition(";")[0].strip().lower()
    if ctype.endswith("json") or text[:1] in (b"{", b"["):
        data = decode_body("application/json", text)
        if not isinstance(data, dict):
            raise MalformedWebhook("expected parameters or a JSON object")
        return [(str(k), str(v)) for k, v in data.items() if v is not None]
    if ctype not in ("application/x-www-form-urlencoded", "", "text/plain"):
        raise MalformedWebhook(f"unsupported content type {ctype!r}")
    try:
        pairs = parse_qsl(text.decode().lstrip("?&"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise MalformedWebhook("body is not valid form data") from exc
    if not pairs:
        raise MalformedWebhook("body is not valid form data")
    return pairs


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
    detail = (
        dto.get("message")
        or dto.get("developerMessage")
        or response.body[:200].decode(errors="replace")
    )
    code = dto.get("code") if response.status == 400 else None
    if 400 <= response.status < 500:
        return client_error(
            response.status, str(code if code is not None else response.status), detail
        )
    return SendResult.unknown(str(response.status), detail)  # 1xx/3xx: not a documented answer


def _receipt(params: dict[str, str]) -> Receipt:
    provider_id, data_field = params.get("messageId") or None, params.get("dataField", "")
    if provider_id is None and not data_field:
        raise MalformedWebhook("delivery report without messageId or dataField")
    word = params["status"].strip().upper()
    if word not in STATUSES:
        log.warning(
            "unknown ZoomConnect status %r kept unmapped", word, extra={"provider": "zoomconnect"}
        )
    return Receipt(
        provider_message_id=provider_id,
        message_id=int(data_field) if data_field.isdigit() else None,
        status=STATUSES.get(word),
        provider_status=params["status"],
        error_code=word if word in FAILURES else None,
        raw=params,
        opt_out=word == OPT_OUT,
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
        opt_out=word == OPT_OUT,
    )
