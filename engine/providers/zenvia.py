"""Zenvia API v2: account type ``zenvia``.

Wire format (seed 002, providers.md §2 and its "engine choices" row):

* auth: header ``X-API-TOKEN`` on every request
* send: ``POST {base}/v2/channels/{channel}/messages`` ``{from, to, contents: [{type: text,
  text}], externalId}`` → 200 ``{id, externalId, from, to, direction, channel, contents,
  timestamp}``. Our message id travels in ``externalId``; Zenvia keeps it for tracking only
  and does not deduplicate on it, so sends are not idempotent.
* base URL ``https://api.zenvia.com``; a ``base_url`` written with the version
  (``https://api.zenvia.com/v2``, as providers.md gives it) is read the same
* errors ``{code, message, details: [{code, path, message}]}`` (the seed's table): 400
  VALIDATION_ERROR, 404 NOT_FOUND, 409 DUPLICATED, and any other 4xx, are ``rejected`` with
  Zenvia's code and message; 401 AUTHENTICATION_ERROR, 403 and 402 are the account's
  (``account``: the messages wait, the account pauses; engine.accounts).
  ``GET /v2/subscriptions`` is the account's ``check``. 500 with ``code:
  INTERNAL_ERROR`` is the one error the seed marks "retry: yes", so it is ``retry``. A
  send is not idempotent (``externalId`` is for tracking only), so everything else that
  may have been taken is ``unknown`` and never resent: 502, 503, 504, any other 5xx, a
  500 without Zenvia's body (a proxy's page), a timeout or a connection dropped after
  the request was written. Only a connection that failed before the request was written
  (refused, DNS, connect timeout) and a 429 are ``retry``.
* failure vocabulary: every MESSAGE_STATUS arrives after Zenvia answered 200, so every
  failure code it carries (NOT_DELIVERED, REJECTED, HANG_UP) is ``undelivered`` with the
  channel's error code (``causes[0].channelErrorCode``, else ``cause``, else the status
  code) in ``error_code``. Zenvia documents no opt-out failure code, so no receipt adds a
  suppression; STOP replies (MESSAGE events) do.
* one message per request: the batch API (``POST /v2/message-batches``, not in the seed)
  takes a CSV file and answers with one batch id, with no per-message id or externalId, so
  it cannot tell the engine which message was taken
* webhooks: one JSON event per call, to the URL of a subscription (``POST
  /v2/subscriptions``, made by :meth:`ZenviaAdapter.subscribe`, ``engine providers
  subscribe``) whose ``webhook.headers`` carry our secret as ``X-Webhook-Secret``.
  ``MESSAGE_STATUS`` is a receipt (``message.id``, ``message.externalId``,
  ``messageStatus.code``, ``causes[]`` or the older ``cause``), deduplicated on the event
  ``id``; ``MESSAGE`` (direction IN) is a reply, and a STOP/START reply also an OptChange.

What rests on a guess [G], so the adapter is tolerant there:

* 429 is ``retry`` (``Retry-After`` honoured); Zenvia documents no rate limit for
  messaging, and a 429 proves the message was not taken
* ``to`` is sent as digits without the ``+`` (Zenvia's examples never carry one); for
  Facebook it is the page-scoped id, sent as given
* status codes outside the seed-era enum: CLICKED → read, VERIFIED → delivered, REJECTED
  (refused by the channel after the 200) → undelivered; the voice codes TERMINATED →
  delivered and HANG_UP → undelivered. DELETED, ACCEPTED and RECORDED change nothing
  (status None, not logged); any other code is logged and kept with status None
* ``occurred_at`` is ``messageStatus.timestamp`` (when the channel reported it), else the
  event's ``timestamp``
* events of other types, and MESSAGE events of direction OUT, carry nothing for the engine
  and are acknowledged without effect
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from engine.errors import ProviderPermanentError, ProviderTemporaryError
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
    client_error,
    decode_body,
    opt_change_for_reply,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: Zenvia's ``messageStatus.code`` values, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "SENT": MessageStatus.SENT,
    "DELIVERED": MessageStatus.DELIVERED,
    "READ": MessageStatus.READ,
    "NOT_DELIVERED": MessageStatus.UNDELIVERED,
    "REJECTED": MessageStatus.UNDELIVERED,
    "CLICKED": MessageStatus.READ,
    "VERIFIED": MessageStatus.DELIVERED,
    "TERMINATED": MessageStatus.DELIVERED,
    "HANG_UP": MessageStatus.UNDELIVERED,
}
#: known codes that say nothing about an outbound message's fate
NO_CHANGE = frozenset({"DELETED", "ACCEPTED", "RECORDED"})
#: codes whose word is the error code when Zenvia gives no cause
FAILURES = frozenset({"NOT_DELIVERED", "REJECTED", "HANG_UP"})
#: channels whose addresses are phone numbers
PHONE_CHANNELS = frozenset({"sms", "whatsapp"})


class ZenviaAccount(AccountBase):
    """A Zenvia account: an API token, the channel, and the sender (``from``)."""

    default_base_url: ClassVar[str] = "https://api.zenvia.com"

    type: Literal["zenvia"] = "zenvia"
    token: SecretStr
    channel: Literal["sms", "whatsapp", "facebook"] = "sms"
    # the SMS alias / sender ID, the WhatsApp number, or the Facebook page id
    sender: str = Field(min_length=1, max_length=64)

    @property
    def url(self) -> str:
        """The API base URL without the ``/v2`` our paths carry (written with or without)."""
        base = (self.base_url or self.default_base_url).rstrip("/")
        return base.removesuffix("/v2").removesuffix("/V2")


class ZenviaAdapter(Adapter[ZenviaAccount]):
    """Client of the Zenvia API v2."""

    account_model = ZenviaAccount
    # 500 is retryable only with Zenvia's own INTERNAL_ERROR body: see ``_screen``
    retryable_statuses = frozenset({429})

    def auth_headers(self) -> dict[str, str]:
        """``X-API-TOKEN``."""
        return {"X-API-TOKEN": self.account.token.get_secret_value()}

    def _screen(self, response: Response) -> Response | SendResult:
        """500 INTERNAL_ERROR (the seed's one "retry: yes") is ``retry``; other 5xx
        ``unknown``."""
        if response.status == 500:
            data = response.json()
            if isinstance(data, dict) and data.get("code") == "INTERNAL_ERROR":
                return SendResult.retry("INTERNAL_ERROR", _error_message(data) or None)
        return super()._screen(response)

    def _payload(self, message: Outbound) -> dict[str, Any]:
        to = message.to.lstrip("+") if self.account.channel in PHONE_CHANNELS else message.to
        return {
            "from": message.sender or self.account.sender,
            "to": to,
            "contents": [{"type": "text", "text": message.body}],
            "externalId": str(message.message_id),
        }

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /v2/channels/{channel}/messages``."""
        path = f"/v2/channels/{self.account.channel}/messages"
        result = await self._request("POST", path, json=self._payload(message))
        if isinstance(result, SendResult):
            return result
        if not result.ok:
            return _error(result)
        data = result.json()
        if isinstance(data, dict) and data.get("id"):
            return SendResult.accepted(str(data["id"]))
        return SendResult.unknown("bad_response", "a 2xx without the message id")

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """One event: MESSAGE_STATUS → a receipt; MESSAGE → a reply (and opt change)."""
        data = decode_body(content_type or "application/json", body)
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise MalformedWebhook("expected a Zenvia event: a JSON object with a type")
        if data["type"] == "MESSAGE_STATUS":
            return WebhookEvents(receipts=(_receipt(data),))
        if data["type"] == "MESSAGE":
            return self._message_event(data)
        log.info(
            "%s: Zenvia event of type %r ignored",
            self.name,
            data["type"],
            extra={"provider": self.name},
        )
        return WebhookEvents()

    def _message_event(self, event: dict[str, Any]) -> WebhookEvents:
        message = event.get("message")
        if not isinstance(message, dict):
            raise MalformedWebhook("MESSAGE event without a message")
        if (message.get("direction") or event.get("direction")) == "OUT":
            return WebhookEvents()  # our own outbound message, echoed
        sender, contents = message.get("from"), message.get("contents")
        if not isinstance(sender, str) or not sender or not isinstance(contents, list):
            raise MalformedWebhook("MESSAGE event without message.from and message.contents")
        text = "\n".join(
            c["text"]
            for c in contents
            if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
        )
        channel = str(message.get("channel") or event.get("channel") or self.account.channel)
        phone = as_e164(sender) if channel in PHONE_CHANNELS else sender
        reply = Inbound(phone, text, _opt_str(message.get("id")), None, event)
        opt = opt_change_for_reply(phone, text, event) if channel in PHONE_CHANNELS else None
        if opt is not None and channel != opt.channel:
            opt = replace(opt, channel=channel)
        return WebhookEvents(inbound=(reply,), opt_changes=(opt,) if opt else ())

    def check_path(self) -> str:
        """``GET /v2/subscriptions``."""
        return "/v2/subscriptions"

    async def subscribe(self, public_url: str) -> dict[str, Any]:
        """Create the MESSAGE_STATUS and MESSAGE (inbound) subscriptions to our webhook.

        Returns Zenvia's answer for each, by event type. Raises ProviderTemporaryError or
        ProviderPermanentError; a subscription made before the failure is kept.
        """
        webhook: dict[str, Any] = {"url": self.webhook_url(public_url)}
        secret = self.account.webhook_secret
        if secret is None:
            log.warning(
                "%s: no webhook_secret: anyone may post to the webhook",
                self.name,
                extra={"provider": self.name},
            )
        else:
            webhook["headers"] = {self.webhook_secret_name: secret.get_secret_value()}
        channel = self.account.channel
        made: dict[str, Any] = {}
        for event_type, criteria in (
            ("MESSAGE_STATUS", {"channel": channel}),
            ("MESSAGE", {"channel": channel, "direction": "IN"}),
        ):
            made[event_type] = await self._create_subscription(
                {
                    "eventType": event_type,
                    "webhook": webhook,
                    "criteria": criteria,
                    "status": "ACTIVE",
                    "version": "v2",
                }
            )
        return made

    async def _create_subscription(self, body: dict[str, Any]) -> Any:
        result = await self._request("POST", "/v2/subscriptions", json=body)
        what = f"{self.name}: {body['eventType']} subscription"
        if isinstance(result, SendResult):
            raise ProviderTemporaryError(
                f"{what}: {result.error_code} {result.error_detail or ''}".rstrip()
            )
        if not result.ok:
            error = _error(result)
            raise ProviderPermanentError(f"{what}: {error.error_code}: {error.error_detail}")
        return result.json()


def _error(response: Response) -> SendResult:
    """A 4xx is a rejection with Zenvia's ``code`` and ``message`` (and ``details``)."""
    data = response.json()
    body = data if isinstance(data, dict) else {}
    code = str(body.get("code") or response.status)
    detail = _error_message(body) or response.body[:200].decode(errors="replace")
    if 400 <= response.status < 500:
        return client_error(response.status, code, detail)
    return SendResult.unknown(code, detail)  # 1xx/3xx: not a documented answer


def _error_message(body: dict[str, Any]) -> str:
    parts = [str(body["message"])] if body.get("message") else []
    details = body.get("details")
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and item.get("message"):
            where = f"{item['path']}: " if item.get("path") else ""
            parts.append(f"{where}{item['message']}")
    return "; ".join(parts)


def _receipt(event: dict[str, Any]) -> Receipt:
    message = event.get("message")
    message = message if isinstance(message, dict) else {}
    status = event.get("messageStatus")
    if not isinstance(status, dict) or not isinstance(status.get("code"), str):
        raise MalformedWebhook("MESSAGE_STATUS event without messageStatus.code")
    provider_id = _opt_str(message.get("id")) or _opt_str(event.get("messageId"))
    external = str(message.get("externalId") or "")
    if provider_id is None and not external:
        raise MalformedWebhook("MESSAGE_STATUS event without message.id or externalId")
    code = status["code"].strip().upper()
    if code not in STATUSES and code not in NO_CHANGE:
        log.warning("unknown Zenvia status %r kept unmapped", code, extra={"provider": "zenvia"})
    error_code, error_detail = _cause(status, code)
    return Receipt(
        provider_message_id=provider_id,
        message_id=int(external) if external.isdigit() else None,
        status=STATUSES.get(code),
        provider_status=status["code"],
        error_code=error_code,
        error_detail=error_detail,
        event_id=_opt_str(event.get("id")),
        occurred_at=_timestamp(status.get("timestamp")) or _timestamp(event.get("timestamp")),
        raw=event,
    )


def _cause(status: dict[str, Any], code: str) -> tuple[str | None, str | None]:
    """``causes[0]`` (channelErrorCode; details or reason), else the older ``cause``."""
    causes = status.get("causes")
    first = causes[0] if isinstance(causes, list) and causes else None
    description = _opt_str(status.get("description")) if code in FAILURES else None
    if isinstance(first, dict):
        error = _opt_str(first.get("channelErrorCode")) or (code if code in FAILURES else None)
        return error, _opt_str(first.get("details")) or _opt_str(first.get("reason"))
    if _opt_str(status.get("cause")):
        return str(status["cause"]), description
    return (code, description) if code in FAILURES else (None, None)


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
