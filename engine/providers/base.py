"""What every provider account and adapter shares: the account model and the Adapter base.

The values passed to and from an adapter are in :mod:`engine.providers.results`, the
webhook body decoding in :mod:`engine.providers.webhook_body`; both are re-exported here.

An account is one block under ``providers:`` in engine.yaml. Its ``type`` picks the
adapter; the keys every type accepts live on :class:`AccountBase`, and each provider
module adds its own (credentials, ids) on a subclass with ``type: Literal[...]``.

An :class:`Adapter` speaks one provider's wire format and nothing else: it turns
:class:`Outbound` messages into :class:`SendResult` s, a webhook body into
:class:`WebhookEvents`, and (where the provider has no webhook) polls for
:class:`Receipt` s. Everything that differs between providers and that the engine must
know is a class attribute here (batch size, where the webhook secret travels, polling,
idempotent sends), so no module outside ``providers/`` names a provider.

How a send's outcome is decided (DESIGN.md, "Delivery semantics"):

=========  ===============================================================================
accepted   the provider answered with its id for the message
retry      provably not accepted: connecting failed (refused, DNS, connect timeout), HTTP 429
           (``retry_after`` from ``Retry-After``), or a status the provider documents as
           retryable (``retryable_statuses``)
unknown    may have been accepted: a timeout after the request was written, a connection
           dropped mid-response, a 5xx the provider does not document as safe, a 2xx we
           cannot read. Where the provider deduplicates on a key we send
           (``idempotent_sends``) these become ``retry`` instead.
rejected   a documented permanent error (4xx), with the provider's code and message
account    the account cannot send, whatever the message: ``reason`` ``auth`` (401/403, or
           the provider's documented bad-credentials or suspended error) or ``credit``
           (402, insufficient credit). Not the recipient's fault: the dispatcher puts the
           message back in the queue and pauses the account (engine.accounts)
=========  ===============================================================================

:meth:`Adapter.check` makes one authenticated read (``engine providers check``, and the
dispatcher's probe of a paused account).
"""

from __future__ import annotations

import hmac
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from pydantic import Field, SecretStr

from engine import phones
from engine.errors import ProviderPermanentError, ProviderTemporaryError
from engine.providers.results import (
    ACCOUNT_STATUSES,
    AccountReason,
    CheckFailed,
    Inbound,
    OptChange,
    Outbound,
    Outcome,
    Receipt,
    Response,
    SendResult,
    WebhookEvents,
    client_error,
)
from engine.providers.webhook_body import (
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    MalformedWebhook,
    decode_body,
    opt_change_for_reply,
)
from engine.strict import Strict
from engine.values import Duration, Rate, RateValue

log = logging.getLogger(__name__)

#: the values and the body decoding live in their own modules; importing them from here
#: keeps working for every adapter
__all__ = [
    "ACCOUNT_STATUSES",
    "OPT_IN_WORDS",
    "OPT_OUT_WORDS",
    "AccountBase",
    "AccountReason",
    "Adapter",
    "CheckFailed",
    "Inbound",
    "MalformedWebhook",
    "OptChange",
    "Outbound",
    "Outcome",
    "PricingTable",
    "Receipt",
    "Response",
    "SendResult",
    "Strict",
    "WebhookEvents",
    "as_e164",
    "client_error",
    "decode_body",
    "opt_change_for_reply",
    "retry_after_seconds",
]


class PricingTable(Strict):
    """Credits per segment: ``prefixes`` maps E.164 prefixes (``"27"``, ``"2782"``) to a rate."""

    default: Decimal | None = None
    prefixes: dict[str, Decimal] = Field(default_factory=dict)


class AccountBase(Strict):
    """Keys common to every provider account."""

    #: the provider's production API, used when ``base_url`` is not set
    default_base_url: ClassVar[str] = ""
    #: the provider authenticates its webhook calls only by our ``webhook_secret``, so an
    #: account without one may serve webhooks only where opened on purpose (demo, tests)
    webhook_needs_secret: ClassVar[bool] = False

    type: str
    base_url: str | None = None
    rate: RateValue = Rate(10, timedelta(seconds=1))
    concurrency: int = Field(default=8, ge=1, le=1000)
    timeout: Duration = timedelta(seconds=10)
    webhook_secret: SecretStr | None = None
    sender: str | None = None
    pricing: PricingTable | None = None

    @property
    def url(self) -> str:
        """The API base URL in use, without a trailing slash."""
        return (self.base_url or self.default_base_url).rstrip("/")

    def secret_values(self) -> list[str]:
        """Every secret of this account (webhook secret, tokens, passwords), to redact."""
        return [
            value.get_secret_value()
            for value in self.__dict__.values()
            if isinstance(value, SecretStr)
        ]


def as_e164(number: str) -> str:
    """``+`` and digits for an international number; anything else is returned as given."""
    return phones.as_e164(number)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _detail(body: bytes) -> str:
    return body[:200].decode(errors="replace")


# --- the adapter ---------------------------------------------------------------------------

AccountT = TypeVar("AccountT", bound=AccountBase)


class Adapter(ABC, Generic[AccountT]):
    """One provider account's client: send, read webhooks, poll, balance."""

    #: the account model this adapter is built from (its ``type`` names the adapter)
    account_model: ClassVar[type[AccountBase]]
    #: where the provider puts our webhook secret: a request header, or a query parameter
    #: of the callback URL we give it (for providers that can send no custom header)
    webhook_secret_in: ClassVar[Literal["header", "query"]] = "header"
    #: the header or query parameter carrying the secret
    webhook_secret_name: ClassVar[str] = "X-Webhook-Secret"
    #: the provider has a per-message status lookup and ``poll`` uses it
    supports_polling: ClassVar[bool] = False
    #: the provider reports deliveries by webhook (False: every sent message is polled)
    delivery_webhooks: ClassVar[bool] = True
    #: the provider deduplicates on a key we send, so an ambiguous send is safe to repeat
    idempotent_sends: ClassVar[bool] = False
    #: HTTP statuses the provider documents as "not accepted, try again"
    retryable_statuses: ClassVar[frozenset[int]] = frozenset({429})

    def __init__(self, name: str, account: AccountT, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.account = account
        self.session = session
        #: how many messages one ``send`` call may carry (1: the provider sends singly)
        self.max_batch = 1
        #: the engine's public URL (engine.yaml ``webhooks.public_url``), for providers that
        #: take a callback URL with each request; ``adapter_for`` sets it
        self.public_url: str | None = None
        seconds = account.timeout.total_seconds()
        # connecting gets half the budget, so an unreachable provider is a provable
        # ``retry`` (ConnectionTimeoutError) rather than an ambiguous total timeout
        self._timeout = aiohttp.ClientTimeout(total=seconds, connect=seconds / 2)
        self._headers = {"Accept": "application/json", **self.auth_headers()}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate every request to the provider."""
        return {}

    # sending

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Send up to ``max_batch`` messages: one result per message, in order.

        Never raises for provider or network trouble (a batch over ``max_batch`` is a bug and
        raises ValueError). A batch of one goes to the single-message endpoint.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"{self.name}: batch of {len(batch)} exceeds {self.max_batch}")
        if not batch:
            return []
        if len(batch) == 1:
            return [await self.send_one(batch[0])]
        results = await self.send_many(batch)
        if len(results) != len(batch):  # an adapter bug; never guess which were accepted
            return [SendResult.unknown("bad_response", "result count mismatch")] * len(batch)
        return results

    @abstractmethod
    async def send_one(self, message: Outbound) -> SendResult:
        """Send one message."""

    async def send_many(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Send several messages in one request (adapters with ``max_batch`` > 1)."""
        raise NotImplementedError(f"{type(self).__name__} sends one message per request")

    # webhooks

    def webhook_url(self, public_url: str) -> str:
        """The callback URL to configure at the provider for this account."""
        url = f"{public_url.rstrip('/')}/webhooks/{quote(self.name, safe='')}"
        secret = self.account.webhook_secret
        if self.webhook_secret_in == "query" and secret is not None:
            url += "?" + urlencode({self.webhook_secret_name: secret.get_secret_value()})
        return url

    def webhook_authentic(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a webhook call carries this account's secret (any call, if none is set)."""
        secret = self.account.webhook_secret
        if secret is None:
            return True
        if self.webhook_secret_in == "query":
            given = query.get(self.webhook_secret_name)
        else:
            given = _header(headers, self.webhook_secret_name)
        if given is None:
            return False
        return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())

    def _query_without_secret(self, query: Mapping[str, str]) -> dict[str, str]:
        """The callback's query parameters, minus our secret (so it is never stored)."""
        skip = self.webhook_secret_name if self.webhook_secret_in == "query" else None
        return {k: v for k, v in query.items() if k != skip}

    @abstractmethod
    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """Read one authenticated webhook call; raise MalformedWebhook if it makes no sense."""

    # lookups

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Current status of sent messages (``supports_polling``); those not found are left
        out."""
        return []

    async def balance(self) -> Decimal | None:
        """The account's credit balance, or None if the provider does not tell."""
        return None

    # the account's health

    def check_path(self) -> str:
        """The cheap authenticated GET that :meth:`check` makes."""
        raise NotImplementedError(f"{type(self).__name__} has no check")

    async def check(self) -> str:
        """One authenticated read: what the provider answered, in a few words.

        Raises CheckFailed: with the reason (auth, credit) when the provider refused,
        without one when it could not be reached or answered something else.
        """
        path = self.check_path()
        result = await self._request("GET", path)
        what = f"{self.name}: GET {path}"
        if isinstance(result, SendResult):
            raise CheckFailed(f"{what}: {result.error_code} {result.error_detail or ''}".rstrip())
        if not result.ok:
            raise CheckFailed(
                f"{what}: HTTP {result.status}: {_detail(result.body)}",
                ACCOUNT_STATUSES.get(result.status),
            )
        summary = self.check_summary(result.json())
        return f"{what}: HTTP {result.status}" + (f", {summary}" if summary else "")

    def check_summary(self, data: Any) -> str:
        """What to show of the check's answer (raise CheckFailed for an answer that says the
        account cannot send, such as no credit)."""
        return ""

    # HTTP

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response | SendResult:
        """Call the provider; a transport failure, 429 or 5xx comes back as a SendResult."""
        data = None if json is None else orjson.dumps(json)
        headers = self._headers if data is None else self._json_headers
        try:
            async with self.session.request(
                method,
                self.account.url + path,
                data=data,
                headers=headers,
                params=params,
                timeout=self._timeout,
            ) as resp:
                response = Response(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return self._failed(SendResult.retry("connect_error", str(exc) or _name(exc)))
        except aiohttp.InvalidURL as exc:
            return self._failed(SendResult.retry("invalid_url", str(exc)))
        except TimeoutError:
            return self._failed(self._ambiguous("timeout", f"no answer in {self._timeout.total}s"))
        except aiohttp.ClientError as exc:
            return self._failed(self._ambiguous("connection_lost", str(exc) or _name(exc)))
        return self._screen(response)

    def _failed(self, result: SendResult) -> SendResult:
        log.debug(
            "%s: %s (%s)",
            self.name,
            result.error_code,
            result.outcome,
            extra={"provider": self.name},
        )
        return result

    def _screen(self, response: Response) -> Response | SendResult:
        if response.status in self.retryable_statuses:
            after = retry_after_seconds(response.headers.get("Retry-After"))
            return SendResult.retry(str(response.status), _detail(response.body), after)
        if response.status >= 500:
            return self._ambiguous(str(response.status), _detail(response.body))
        return response

    def _ambiguous(self, code: str, detail: str) -> SendResult:
        if self.idempotent_sends:
            return SendResult.retry(code, detail)
        return SendResult.unknown(code, detail)

    async def _get_json(self, path: str) -> Any:
        """GET a JSON document; raise ProviderTemporaryError or ProviderPermanentError."""
        result = await self._request("GET", path)
        if isinstance(result, SendResult):
            raise ProviderTemporaryError(
                f"{self.name}: GET {path}: {result.error_code} {result.error_detail or ''}"
            )
        if not result.ok:
            raise ProviderPermanentError(f"{self.name}: GET {path}: HTTP {result.status}")
        return result.json()
