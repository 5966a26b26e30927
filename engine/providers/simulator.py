"""The engine's own provider (account type ``simulator``): its account and adapter.

:class:`SimulatorAdapter` is the client of a trivial provider protocol made for the demo,
the tests and the benchmarks (no credentials, no network beyond this machine); the server
that plays it (and every other provider) is the :mod:`engine.simulator` package.

- ``POST /sim/v1/messages`` ``{to, body, sender, reference}`` → 200 ``{id}``, or 4xx
  ``{error: {code, detail}}``; 429 carries ``Retry-After``
- ``POST /sim/v1/messages/bulk`` ``{messages: [...]}`` →
  ``{results: [{id} | {error: {code, detail}}]}``, one per message, in order
- 500 and 503 mean the simulated provider took nothing (its ``server_errors`` and its
  outage switch): retryable, so routes may move such a message to another account
- ``Authorization: Bearer <token>`` when the account has a token (optional)
- ``GET /sim/v1/account`` → ``{status, credit}`` (the adapter's ``check``)
- webhook: JSON ``{events: [{id, message_id, reference, status, code, detail, at}]}``
  (``reference`` is our message id; ``id`` the event id, repeated on duplicates), plus
  ``{id, type: "inbound", from, text, in_reply_to, at}`` for replies; authenticated by
  the ``X-Webhook-Secret`` header when the account has a ``webhook_secret``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, SecretStr

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

#: the simulator protocol's statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    # a receipt comes only after the send was accepted: a later failure is undelivered, as
    # for every provider (``failed`` is for sends refused at the request); the code says why
    "failed": MessageStatus.UNDELIVERED,
}


class SimulatorAccount(AccountBase):
    """An account on the local simulator."""

    default_base_url: ClassVar[str] = "http://127.0.0.1:8090"
    #: the simulator protocol signs nothing: its webhook trusts the secret alone
    webhook_needs_secret: ClassVar[bool] = True

    type: Literal["simulator"] = "simulator"
    token: SecretStr | None = None
    bulk: bool = False
    batch_size: int = Field(default=100, ge=1, le=10_000)


class SimulatorAdapter(Adapter[SimulatorAccount]):
    """Client of the simulator protocol."""

    account_model = SimulatorAccount
    #: the simulator protocol documents its 5xx answers as "nothing taken"
    retryable_statuses = frozenset({429, 500, 503})

    def __init__(
        self, name: str, account: SimulatorAccount, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, account, session)
        self.max_batch = account.batch_size if account.bulk else 1

    def auth_headers(self) -> dict[str, str]:
        """A bearer token, when the account has one."""
        token = self.account.token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def _payload(self, message: Outbound) -> dict[str, Any]:
        sender = message.sender or self.account.sender
        return {
            "to": message.to,
            "body": message.body,
            "sender": sender,
            "reference": str(message.message_id),
        }

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /sim/v1/messages``."""
        result = await self._request("POST", "/sim/v1/messages", json=self._payload(message))
        if isinstance(result, SendResult):
            return result
        data = result.json()
        if result.ok:
            return _item_result(data)
        return _error_result(result, data)

    async def send_many(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """``POST /sim/v1/messages/bulk``; results are positional."""
        body = {"messages": [self._payload(m) for m in batch]}
        result = await self._request("POST", "/sim/v1/messages/bulk", json=body)
        if isinstance(result, SendResult):
            return [result] * len(batch)
        data = result.json()
        if not result.ok:
            return [_error_result(result, data)] * len(batch)
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(batch):
            return [SendResult.unknown("bad_response", "results do not match the batch")] * len(
                batch
            )
        return [_item_result(item) for item in items]

    def check_path(self) -> str:
        """``GET /sim/v1/account``."""
        return "/sim/v1/account"

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """``{events: [...]}``: status events become receipts, ``inbound`` ones replies."""
        data = decode_body(content_type or "application/json", body)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise MalformedWebhook("expected {events: [objects]}")
        receipts = [_receipt(e) for e in events if e.get("type", "status") == "status"]
        inbound = [_inbound(e) for e in events if e.get("type") == "inbound"]
        opts = [opt_change_for_reply(i.from_, i.text, i.raw) for i in inbound]
        return WebhookEvents(
            tuple(receipts), tuple(inbound), tuple(o for o in opts if o is not None)
        )


def _item_result(item: Any) -> SendResult:
    if isinstance(item, dict) and item.get("id"):
        return SendResult.accepted(str(item["id"]))
    error = item.get("error") if isinstance(item, dict) else None
    if isinstance(error, dict):
        return SendResult.rejected(str(error.get("code")), error.get("detail"))
    return SendResult.unknown("bad_response", "neither id nor error")


def _error_result(response: Response, data: Any) -> SendResult:
    """A 4xx: 401/403/402 are the account's (``account``), the rest rejections."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("code"):
        return client_error(response.status, str(error["code"]), error.get("detail"))
    return client_error(
        response.status, str(response.status), response.body[:200].decode(errors="replace")
    )


def _receipt(event: dict[str, Any]) -> Receipt:
    status = event.get("status")
    if not isinstance(status, str):
        raise MalformedWebhook("event without a status")
    reference = str(event.get("reference") or "")
    if status not in STATUSES:
        log.warning(
            "unknown simulator status %r kept unmapped", status, extra={"provider": "simulator"}
        )
    return Receipt(
        provider_message_id=_opt_str(event.get("message_id")),
        message_id=int(reference) if reference.isdigit() else None,
        status=STATUSES.get(status),
        provider_status=status,
        error_code=_opt_str(event.get("code")),
        error_detail=_opt_str(event.get("detail")),
        event_id=_opt_str(event.get("id")),
        occurred_at=_timestamp(event.get("at")),
        raw=event,
    )


def _inbound(event: dict[str, Any]) -> Inbound:
    sender, text = event.get("from"), event.get("text")
    if not isinstance(sender, str) or not isinstance(text, str):
        raise MalformedWebhook("inbound event without from and text")
    return Inbound(
        as_e164(sender), text, _opt_str(event.get("id")), _opt_str(event.get("in_reply_to")), event
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
