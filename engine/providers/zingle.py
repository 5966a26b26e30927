"""Zingle (Medallia Concierge) REST API: account type ``zingle``.

What the seed (000) says, and the engine follows:

* auth: HTTP Basic with the Zingle username and password, or ``Authorization: Bearer
  <JWT>``, a JWT obtained from Zingle's JWT API (with Zingle's built-in authentication) or
  copied from "My Settings" (with SSO). ``auth: basic`` (the default when only a username
  and password are set) sends Basic on every request. ``auth: jwt`` sends the Bearer JWT:
  the configured ``jwt`` if any, and, when a username and password are set too, a JWT
  obtained from the JWT API (``GET {base}{jwt_path}`` with Basic credentials) and renewed
  before it expires (once 80% of its lifetime has passed) and again, once, when a request
  is answered 401. A ``jwt`` without a username and password cannot be renewed: once it
  expires, Zingle's 401 reaches the engine as an authentication failure.
* JSON bodies with ``Content-Type: application/json``; phone numbers in E.164
* dates: "any valid ISO-8601 date format" (the seed) or Unix seconds (the v1 docs): both
  are read, wherever a date appears
* the "Contact Opt-In Status" webhook, ``{action: block|unblock, direction:
  inbound|outbound, contact_phone, service_phone, is_auto_blocked, ...}``, authenticated
  by a custom header the admin adds in Zingle (``X-Webhook-Secret``; Zingle signs nothing).
  An outbound block is an opt-out of the number; an unblock lifts only the suppression a
  Zingle block created (the suppression's source is ``webhook:{account}``), never one from
  a STOP reply through another provider or an operator's.

Taken from the v1 REST docs (providers.md §3; the seed does not document sending):

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
  2600 (server error) is retryable; 2601 (authentication failed), 2602 (permission denied)
  and any 401/403/402 are the account's (``account``; engine.accounts), after the one JWT
  renewal a 401 gets; every other documented code is permanent. ``GET
  /v1/services/{service_id}`` (through the JWT renewal, if any) is the account's ``check``
* no delivery webhook: ``poll`` reads ``GET {base}/v1/services/{service_id}/messages/{id}``
  (the engine's poller looks at 1, 5, 15 and 60 minutes after sending, then every 6 hours,
  until the message's validity or the receipt window ends)

Where neither says, the adapter takes every plausible variant [G]:

* the JWT API's path and answer are not documented: ``jwt_path`` (default
  ``/v1/auth/jwt``) is configurable; the token is read from ``result`` or the top level,
  under ``jwt``, ``token`` or ``access_token``; its expiry from ``expires_at`` (a date),
  ``expires_in`` (seconds), else the JWT's own ``exp`` claim, else it is renewed after
  ``jwt_lifetime``
* statuses: the only documented ``statuses[].type`` is ``failed`` (Zingle's iOS SDK). The
  message was accepted when it failed, so a failure is ``undelivered`` (the engine's one
  failure vocabulary), with ``failed`` as ``error_code`` and its ``description`` as the
  reason; ``undelivered`` and ``delivered`` types, should Zingle send them, map to
  themselves. Otherwise a message with ``executed_at`` set is ``sent``: Zingle has **no
  delivered signal**, so a Zingle message normally never becomes ``delivered``. A message
  not yet executed (``is_delayed``, or still queued at Zingle) is also ``sent`` (our
  ``queued`` means "not yet handed over", which it is not), with ``provider_status``
  ``delayed`` or ``queued``. Other types are logged and kept as ``provider_status``.
  ``read_at`` is not read as ``read``: its meaning on an outbound message is not documented.
  No opt-out failure is documented, so no polled status adds a suppression (the block
  webhook does).
* ``uuid`` is deduplicated per service for as long as Zingle remembers it. Our ids restart
  if the database is recreated, so an operator who does that against the same Zingle
  service must set a new ``uuid_namespace``, or Zingle may drop new messages as repeats.
* opt-in webhook: only ``direction: outbound`` changes whether we may send (STOP, or a
  user blocking outbound messages); ``direction: inbound`` blocks (the business muting a
  contact's messages to it) are ignored. ``contact_phone`` may come in E.164 (the seed's
  sample) or formatted ("406-555-1212"): a number without its country code is read in the
  country of ``service_phone``.
* Zingle echoes neither our id nor the ``uuid`` in the message object, so polled receipts
  carry the provider id only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
import phonenumbers
from pydantic import SecretStr, model_validator

from engine.providers.base import (
    AccountBase,
    AccountReason,
    Adapter,
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
)
from engine.providers.zingle_jwt import renew_at, token_from, zingle_date
from engine.status import MessageStatus
from engine.values import Duration

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
#: codes that are the account's problem, not the message's
ACCOUNT_CODES: Mapping[int, AccountReason] = {2601: AccountReason.AUTH, 2602: AccountReason.AUTH}

#: ``statuses[].type`` values, onto ours: ``failed`` is the only documented one and, as the
#: message had been accepted, it is ``undelivered``; the others are guesses [G]
STATUSES: Mapping[str, MessageStatus] = {
    "failed": MessageStatus.UNDELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "delivered": MessageStatus.DELIVERED,
    "sent": MessageStatus.SENT,
}
API = "/v1/services"
#: uuid5 namespace of our message ids, unless the account sets ``uuid_namespace``
DEFAULT_NAMESPACE = uuid.UUID("6d0f3a52-5c1e-4a53-9b0e-3f1c2a7d9e41")


class ZingleAccount(AccountBase):
    """A Zingle service: Basic (``username``/``password``) or Bearer JWT credentials."""

    default_base_url: ClassVar[str] = "https://api.zingle.me"

    type: Literal["zingle"] = "zingle"
    username: str | None = None
    password: SecretStr | None = None
    jwt: SecretStr | None = None
    #: basic: Basic on every request; jwt: a Bearer JWT (renewed when a username and
    #: password are set). Default: jwt when a ``jwt`` is set, else basic.
    auth: Literal["basic", "jwt"] | None = None
    jwt_path: str = "/v1/auth/jwt"  # the JWT API [G]
    jwt_lifetime: Duration = timedelta(minutes=5)  # when the answer does not say [G]
    service_id: str
    channel_type_id: str  # the service's "Phone Number" channel type
    uuid_namespace: uuid.UUID = DEFAULT_NAMESPACE  # change it if message ids restart

    @model_validator(mode="after")
    def _credentials(self) -> ZingleAccount:
        basic = (self.username, self.password) != (None, None)
        if basic and (not self.username or self.password is None):
            raise ValueError("username and password go together")
        if not basic and self.jwt is None:
            raise ValueError("set username and password (Basic, or to obtain JWTs) or jwt")
        if self.auth == "basic" and not basic:
            raise ValueError("auth: basic needs username and password")
        return self

    @property
    def bearer(self) -> bool:
        """Whether requests carry a Bearer JWT (else Basic)."""
        return self.auth == "jwt" or (self.auth is None and self.jwt is not None)

    @property
    def renewable(self) -> bool:
        """Whether the adapter obtains and renews JWTs through the JWT API."""
        return self.bearer and self.username is not None

    def basic_header(self) -> dict[str, str]:
        """``Authorization: Basic`` from the username and password."""
        assert self.username is not None and self.password is not None
        pair = f"{self.username}:{self.password.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def message_uuid(namespace: uuid.UUID, message_id: int) -> str:
    """The ``uuid`` for our message: the same for every attempt at that message."""
    return str(uuid.uuid5(namespace, str(message_id)))


class ZingleAdapter(Adapter[ZingleAccount]):
    """Client of the Zingle REST API (v1)."""

    delivery_webhooks = False  # Zingle reports deliveries only when asked

    account_model = ZingleAccount
    supports_polling = True
    idempotent_sends = True

    def __init__(self, name: str, account: ZingleAccount, session: aiohttp.ClientSession) -> None:
        super().__init__(name, account, session)
        self._jwt = account.jwt.get_secret_value() if account.bearer and account.jwt else None
        #: wall-clock time after which the JWT is renewed before use
        self._renew_at = renew_at(self._jwt, account.jwt_lifetime) if self._jwt else 0.0
        self._renewing = asyncio.Lock()
        #: JWTs obtained from the JWT API (for metrics and tests)
        self.jwts_obtained = 0

    def auth_headers(self) -> dict[str, str]:
        """Bearer JWT, or Basic username:password."""
        if not self.account.bearer:
            return self.account.basic_header()
        jwt = self.account.jwt
        return {"Authorization": f"Bearer {jwt.get_secret_value()}"} if jwt else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response | SendResult:
        """Any call, with a JWT renewed before it expires and once more on a 401."""
        if not self.account.renewable:
            return await super()._request(method, path, json=json, params=params)
        if self._jwt is None or time.time() >= self._renew_at:
            failed = await self._renew(self._jwt)
            if failed is not None:
                return failed
        used = self._jwt
        result = await super()._request(method, path, json=json, params=params)
        if isinstance(result, Response) and result.status == 401:
            failed = await self._renew(used)
            if failed is not None:
                return failed
            result = await super()._request(method, path, json=json, params=params)
        return result

    async def _renew(self, stale: str | None) -> Response | SendResult | None:
        """Obtain a new JWT unless another call already replaced ``stale``; None when one is
        in place, else why not (the JWT API's error answer, or ``retry``: nothing was
        sent)."""
        async with self._renewing:
            if self._jwt is not None and self._jwt != stale:
                return None
            answer = await self._obtain()
            if isinstance(answer, SendResult | Response):
                return answer
            self._jwt, self._renew_at = answer
            self.jwts_obtained += 1
            for headers in (self._headers, self._json_headers):
                headers["Authorization"] = f"Bearer {self._jwt}"
            return None

    async def _obtain(self) -> tuple[str, float] | Response | SendResult:
        """``GET {jwt_path}`` with Basic credentials: the JWT and when to renew it."""
        url = self.account.url + self.account.jwt_path
        headers = {"Accept": "application/json", **self.account.basic_header()}
        try:
            async with self.session.get(url, headers=headers, timeout=self._timeout) as resp:
                response = Response(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult.retry("jwt_unavailable", str(exc) or type(exc).__name__)
        if not response.ok:
            log.warning(
                "%s: the JWT API answered %d",
                self.name,
                response.status,
                extra={"provider": self.name},
            )
            return (
                response
                if response.status < 500
                else SendResult.retry("jwt_unavailable", f"the JWT API answered {response.status}")
            )
        found = token_from(response.json(), self.account.jwt_lifetime)
        if found is None:
            return SendResult.retry("jwt_unavailable", "the JWT API answered without a token")
        return found

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
        detail = (
            status.get("description")
            or status.get("error_message")
            or ERROR_CODES.get(code or 0)
            or response.body[:200].decode(errors="replace")
        )
        if code in RETRYABLE_CODES:
            return SendResult.retry(str(code), detail)
        if 400 <= response.status < 500:
            text = str(code if code is not None else response.status)
            if code is not None and code not in ACCOUNT_CODES:  # Zingle's code says what it is
                return SendResult.rejected(text, detail)
            return client_error(response.status, text, detail, ACCOUNT_CODES.get(code or 0))
        return self._ambiguous(str(response.status), detail)  # 1xx/3xx: not documented

    def check_path(self) -> str:
        """``GET /v1/services/{service_id}``."""
        return f"{API}/{quote(self.account.service_id, safe='')}"

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """The Contact Opt-In Status webhook: an outbound block or unblock."""
        data = decode_body(content_type or "application/json", body)
        if not isinstance(data, dict):
            raise MalformedWebhook("expected a JSON object")
        action, direction, phone = (
            data.get("action"),
            data.get("direction"),
            data.get("contact_phone"),
        )
        if action not in ("block", "unblock"):
            raise MalformedWebhook("action must be block or unblock")
        if direction not in ("inbound", "outbound"):
            raise MalformedWebhook("direction must be inbound or outbound")
        if not isinstance(phone, str) or not phone.strip():
            raise MalformedWebhook("opt-in webhook without contact_phone")
        if direction == "inbound":  # the business muting the contact, not an opt-out
            return WebhookEvents()
        number = contact_number(phone, data.get("service_phone"))
        return WebhookEvents(opt_changes=(OptChange(number, action == "block", "sms", data),))

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """``GET /v1/services/{service_id}/messages/{id}`` for each id, ``concurrency`` at a
        time; ids Zingle does not answer for are left out."""
        limit = asyncio.Semaphore(self.account.concurrency)

        async def one(provider_id: str) -> Receipt | None:
            async with limit:
                result = await self._request(
                    "GET", f"{self._messages}/{quote(provider_id, safe='')}"
                )
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
            log.warning(
                "unknown Zingle status %r kept unmapped",
                entry.get("type"),
                extra={"provider": "zingle"},
            )
    final = [s for s in statuses if STATUSES.get(str(s.get("type"))) in _FINAL]
    failure = next((s for s in final if STATUSES[str(s["type"])] in _FAILED), None)
    pid = str(message.get("id") or provider_id)
    if failure is not None or final:
        entry = failure or final[-1]
        word = str(entry["type"])
        return Receipt(
            pid,
            None,
            STATUSES[word],
            word,
            word if failure else None,
            _opt_str(entry.get("description")) if failure else None,
            occurred_at=zingle_date(entry.get("created_at")),
            raw=message,
        )
    executed = zingle_date(message.get("executed_at"))
    latest = str(statuses[-1].get("type")) if statuses else None
    word = latest or (
        "executed" if executed else "delayed" if message.get("is_delayed") else "queued"
    )
    return Receipt(pid, None, MessageStatus.SENT, word, occurred_at=executed, raw=message)


def _error_code(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_FINAL = frozenset({MessageStatus.UNDELIVERED, MessageStatus.DELIVERED})
_FAILED = frozenset({MessageStatus.UNDELIVERED})


def contact_number(phone: str, service_phone: Any) -> str:
    """``contact_phone`` in E.164: as given when it is, else read in the service's country
    (the seed allows "406-555-1212"); as given (digits made ``+``) when it cannot be read."""
    text = phone.strip()
    region = None
    if isinstance(service_phone, str) and service_phone.strip().startswith("+"):
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(service_phone))
        except phonenumbers.NumberParseException:
            region = None
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return as_e164(text)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
