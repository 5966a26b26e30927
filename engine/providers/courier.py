"""Carium's "courier" texts service (JSON:API): account type ``courier``.

Wire format (seed 004, providers.md §5 and its "engine choices" row):

* auth: ``Authorization: Bearer <token>`` on every request
* send: ``POST {base}/v1/texts/`` ``{data: {type: texts, attributes: {account-id,
  number-id, organization-id (when configured), target (E.164), message,
  callback-status-url, callback-json, callback-url, expected-responses,
  callback-one-off}}}`` → 201 ``{data: {id, type: texts, attributes: {status: accepted,
  error, ...}}}``. Both callback URLs are this account's webhook URL in the path-secret
  form, ``{public_url}/webhooks/{account}/{secret}`` (built from the engine's
  ``webhooks.public_url``, passed by ``adapter_for``), plus ``?message_id=<our id>``
  (and ``event=reply`` on ``callback-url``), so a callback names its message whatever its
  body; ``callback-json`` (an object, as the seed types it) carries ``{"message_id": …}``.
  ``expected-responses`` lists the opt-out and opt-in keywords (STOP, START, …), so those
  replies reach the engine, and ``callback-one-off: false`` keeps every reply coming.
* errors: JSON:API ``{errors: [{status, code, detail, source, meta}]}``; a 4xx is
  ``rejected`` with the first error's code and the details, except 401/403 and 402, the
  account's (``account``; engine.accounts); 429 ``retry``; 5xx and
  timeouts ``unknown`` (there is no idempotency key)
* polling (the receipts layer asks once a message's receipt is overdue, after its
  ``poll_after``): ``GET /v1/texts/{id}/`` (the seed's single-text response), and for
  several texts to one number ``GET /v1/texts/?account-id=…&filter[target]=…``

Where the seed is silent [G], the adapter accepts every plausible variant:

* the default base URL ``https://api.carium.com/courier``: the seed has no ``servers``;
  set ``base_url`` for your deployment
* what arrives at ``callback-status-url``: a JSON:API ``texts`` document (``data.id``,
  ``data.attributes.status``, ``error``, ``error-code``) or Twilio-style form fields
  (``MessageSid``/``SmsSid``, ``MessageStatus``/``SmsStatus``, ``ErrorCode``,
  ``ErrorMessage``), with or without our ``callback-json`` (in ``attributes``, top-level,
  ``meta``, or a form field holding JSON). Our id is read from the URL's ``message_id``
  first, then from ``callback-json``; a Twilio ``MessageSid`` is kept as the provider id
  but matches only where it is the text's id.
* what arrives at ``callback-url``: a JSON:API document like the seed's
  ``text-receive-logs`` (``attributes.message``, ``sender``, ``sid``) or Twilio-style form
  fields (``From``, ``Body``, ``MessageSid``). A one-word STOP/START reply also yields an
  OptChange.
* statuses, Twilio-like: ``accepted``, ``scheduled``, ``queued``, ``sending`` and ``sent``
  → sent (our ``queued`` means "not yet handed over"); ``delivered``; ``read``;
  ``undelivered`` and ``failed`` → ``undelivered`` (courier took the text, then it was not
  delivered; issue 17's vocabulary), with ``error-code``/``ErrorCode`` as the error code,
  else the status word; anything else is logged and kept with status None
* a 201 whose ``status`` is already ``failed`` or ``undelivered`` is a rejection
* ``last-modified-at`` is the time of the status; callbacks carry no event id, so
  receipts carry none (the receipts layer dedupes on message id plus status)
* the webhook secret travels in the URLs we build; courier echoes them (``callback-status-url``,
  ``callback-url``), so the secret is replaced by ``[secret]`` in every payload the adapter
  returns (callbacks and lookups)
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import SecretStr

from engine.providers.base import (
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
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
    client_error,
    decode_body,
    opt_change_for_reply,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: courier's text statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "accepted": MessageStatus.SENT,
    "scheduled": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.UNDELIVERED,
}
#: statuses whose word is the error code when courier gives none
FAILURES = frozenset({"undelivered", "failed"})
#: the replies we ask courier to forward to ``callback-url``
EXPECTED_RESPONSES = sorted(OPT_OUT_WORDS | OPT_IN_WORDS)
#: how many text ids → numbers this process remembers, to poll texts by number
REMEMBERED = 100_000

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
    supports_polling = True

    def __init__(self, name: str, account: CourierAccount, session: aiohttp.ClientSession) -> None:
        super().__init__(name, account, session)
        self._warned = False
        self._targets: OrderedDict[str, str] = OrderedDict()

    def auth_headers(self) -> dict[str, str]:
        """A bearer token."""
        return {"Authorization": f"Bearer {self.account.token.get_secret_value()}"}

    def webhook_url(self, public_url: str) -> str:
        """``{public_url}/webhooks/{account}/{secret}``: courier sends no header of ours, and
        the callback URLs get our own query (``message_id``) appended."""
        url = f"{public_url.rstrip('/')}/webhooks/{quote(self.name, safe='')}"
        secret = self.account.webhook_secret
        return url if secret is None else f"{url}/{quote(secret.get_secret_value(), safe='')}"

    def callback_url(self, message_id: int, reply: bool = False) -> str | None:
        """The URL courier calls about this message (its replies, with ``reply``)."""
        if not self.public_url:
            return None
        base = self.webhook_url(self.public_url)
        joined = f"{base}{'&' if '?' in base else '?'}message_id={message_id}"
        return joined + "&event=reply" if reply else joined

    def _document(self, message: Outbound) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "account-id": self.account.account_id,
            "number-id": self.account.number_id,
            "target": as_e164(message.to),
            "message": message.body,
        }
        if self.account.organization_id:
            attributes["organization-id"] = self.account.organization_id
        status_url = self.callback_url(message.message_id)
        if status_url is not None:
            attributes["callback-status-url"] = status_url
            attributes["callback-json"] = {"message_id": message.message_id}
            attributes["callback-url"] = self.callback_url(message.message_id, reply=True)
            attributes["expected-responses"] = EXPECTED_RESPONSES
            attributes["callback-one-off"] = False
        elif not self._warned:
            self._warned = True
            log.warning(
                "%s: no webhooks.public_url, so courier cannot report statuses",
                self.name,
                extra={"provider": self.name},
            )
        return {"data": {"type": "texts", "attributes": attributes}, "meta": {}}

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /v1/texts/``."""
        result = await self._request("POST", TEXTS, json=self._document(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        sent = _created(result.json())
        if sent.provider_message_id is not None:
            self._targets[sent.provider_message_id] = as_e164(message.to)
            if len(self._targets) > REMEMBERED:
                self._targets.popitem(last=False)
        return sent

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A status callback or a reply, as a JSON:API document or Twilio-style form."""
        extra = self._query_without_secret(query)
        data = self._scrubbed(decode_body(content_type, body))
        if not isinstance(data, dict):
            raise MalformedWebhook("expected a JSON:API document or form fields")
        if isinstance(data.get("data"), dict):
            return _from_document(data, extra)
        if data.get("MessageStatus") or data.get("SmsStatus"):
            return WebhookEvents(receipts=(_twilio_receipt(data, extra),))
        if data.get("From") and "Body" in data:
            return _reply(
                data["From"],
                data["Body"],
                data.get("MessageSid") or data.get("SmsSid"),
                {**data, **extra},
            )
        raise MalformedWebhook("neither a texts document nor Twilio-style status or reply")

    def _scrubbed(self, value: Any) -> Any:
        """``value`` without our secret: courier echoes the callback URLs that carry it."""
        secret = self.account.webhook_secret
        if secret is None:
            return value
        if isinstance(value, str):
            return value.replace(secret.get_secret_value(), "[secret]")
        if isinstance(value, dict):
            return {k: self._scrubbed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrubbed(v) for v in value]
        return value

    # lookups

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Texts to one number together (``filter[target]``), the rest one by one."""
        by_target: dict[str, list[str]] = {}
        single: list[str] = []
        for text_id in provider_message_ids:
            target = self._targets.get(text_id)
            (single if target is None else by_target.setdefault(target, [])).append(text_id)
        for target, ids in list(by_target.items()):
            if len(ids) < 2:
                single.extend(ids)
                del by_target[target]
        limit = asyncio.Semaphore(self.account.concurrency)

        async def listed(target: str, ids: list[str]) -> list[Receipt]:
            async with limit:
                found = await self._list(target)
            missing = [i for i in ids if i not in found]
            return [found[i] for i in ids if i in found] + [
                r for i in missing if (r := await one(i)) is not None
            ]

        async def one(text_id: str) -> Receipt | None:
            async with limit:
                result = await self._request("GET", f"{TEXTS}{quote(text_id, safe='')}/")
            if isinstance(result, SendResult) or not result.ok:
                return None
            return _polled(self._scrubbed(result.json()))

        groups = await asyncio.gather(*(listed(t, ids) for t, ids in by_target.items()))
        singles = await asyncio.gather(*(one(i) for i in single))
        return [r for group in groups for r in group] + [r for r in singles if r is not None]

    def check_path(self) -> str:
        """``GET /v1/texts/?account-id=…``, one text at most (the seed's list)."""
        return f"{TEXTS}?account-id={quote(self.account.account_id, safe='')}&page[limit]=1"

    async def _list(self, target: str) -> dict[str, Receipt]:
        """``GET /v1/texts/?account-id=…&filter[target]=…``: the texts to one number."""
        params = {
            "account-id": self.account.account_id,
            "filter[target]": target,
            "page[limit]": "1000",
        }
        result = await self._request("GET", TEXTS, params=params)
        if isinstance(result, SendResult) or not result.ok:
            return {}
        data = self._scrubbed(result.json())
        items = data.get("data") if isinstance(data, dict) else None
        found = (_polled({"data": item}) for item in items) if isinstance(items, list) else ()
        return {
            r.provider_message_id: r
            for r in found
            if r is not None and r.provider_message_id is not None
        }


def _from_document(data: dict[str, Any], extra: dict[str, str]) -> WebhookEvents:
    """A JSON:API callback: a ``texts`` status, or a received text (a reply)."""
    resource = data["data"]
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        raise MalformedWebhook("JSON:API document without data.attributes")
    raw = {**data, **extra}
    if isinstance(attributes.get("status"), str) and resource.get("type", "texts") == "texts":
        provider_id = _opt_str(resource.get("id"))
        our_id = _our_id(extra, data, attributes)
        if provider_id is None and our_id is None:
            raise MalformedWebhook("texts document without an id or our callback-json")
        return WebhookEvents(receipts=(_receipt(provider_id, our_id, attributes, raw),))
    sender = attributes.get("sender") or attributes.get("from")
    text = attributes.get("message", attributes.get("body"))
    if isinstance(sender, str) and isinstance(text, str):
        return _reply(sender, text, _opt_str(attributes.get("sid") or resource.get("id")), raw)
    raise MalformedWebhook("JSON:API document with neither attributes.status nor a reply")


def _reply(sender: str, text: str, provider_id: str | None, raw: dict[str, Any]) -> WebhookEvents:
    reply = Inbound(as_e164(sender), text, provider_id, None, raw)
    opt = opt_change_for_reply(reply.from_, reply.text, raw)
    return WebhookEvents(inbound=(reply,), opt_changes=(opt,) if opt else ())


def _twilio_receipt(data: dict[str, Any], extra: dict[str, str]) -> Receipt:
    """Twilio's status callback fields, as courier may relay them [G]."""
    attributes = {
        "status": str(data.get("MessageStatus") or data.get("SmsStatus")),
        "error-code": data.get("ErrorCode"),
        "error": data.get("ErrorMessage"),
    }
    provider_id = _opt_str(data.get("MessageSid") or data.get("SmsSid"))
    our_id = _our_id(extra, data, {})
    if provider_id is None and our_id is None:
        raise MalformedWebhook("status callback without MessageSid or our message_id")
    return _receipt(provider_id, our_id, attributes, {**data, **extra})


def _polled(data: Any) -> Receipt | None:
    """A single-text document, as ``GET /v1/texts/{id}/`` answers it."""
    resource = data.get("data") if isinstance(data, dict) else None
    attributes = resource.get("attributes") if isinstance(resource, dict) else None
    if not isinstance(attributes, dict) or not isinstance(attributes.get("status"), str):
        return None
    assert isinstance(resource, dict)
    return _receipt(_opt_str(resource.get("id")), _our_id({}, data, attributes), attributes, data)


def _created(data: Any) -> SendResult:
    """A 201 document: ``data.id``, unless its status already says it failed."""
    resource = data.get("data") if isinstance(data, dict) else None
    if not isinstance(resource, dict) or not resource.get("id"):
        return SendResult.unknown("bad_response", "a 2xx without data.id")
    attributes = resource.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    word = str(attributes.get("status") or "").strip().lower()
    if word in FAILURES:
        return SendResult.rejected(
            str(attributes.get("error-code") or word), _opt_str(attributes.get("error"))
        )
    return SendResult.accepted(str(resource["id"]))


def _error(response: Response) -> SendResult:
    """JSON:API ``errors``: a 4xx is rejected with the first code and every detail."""
    data = response.json()
    found = data.get("errors") if isinstance(data, dict) else None
    errors = [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []
    code = next((str(e["code"]) for e in errors if e.get("code")), str(response.status))
    details = [
        str(e.get("detail") or e.get("title")) for e in errors if e.get("detail") or e.get("title")
    ]
    detail = "; ".join(details) or response.body[:200].decode(errors="replace")
    if 400 <= response.status < 500:
        return client_error(response.status, code, detail)
    return SendResult.unknown(code, detail)  # 1xx/3xx: not a documented answer


def _our_id(
    extra: Mapping[str, str], data: dict[str, Any], attributes: dict[str, Any]
) -> int | None:
    """Our message id: the callback URL's ``message_id``, else the echoed ``callback-json``."""
    for echoed in (
        extra,
        attributes.get("callback-json"),
        data.get("callback-json"),
        data.get("meta"),
        data,
    ):
        if isinstance(echoed, str):
            try:
                echoed = orjson.loads(echoed)
            except orjson.JSONDecodeError:
                continue
        value = echoed.get("message_id") if isinstance(echoed, Mapping) else None
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
        log.warning("unknown courier status %r kept unmapped", word, extra={"provider": "courier"})
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
