"""Zendesk Sunshine Conversations (SunCo, formerly Smooch) on the v2 API: account type ``sunshine``.

Taken from the seed (001, the SunCo v2 reference) and providers.md §4:

* hosts: ``https://{subdomain}.zendesk.com/sc`` (``subdomain``), or ``base_url`` (default
  ``https://api.smooch.io``; ``https://api.eu-1.smooch.io`` for EU apps)
* auth: HTTP Basic key id : secret (default), or ``Authorization: Bearer <JWT>``
  (``auth: jwt``): ``{alg: HS256, typ: JWT, kid}`` . ``{scope: app|account}`` signed with the
  secret. The scope is ``jwt_scope``, else ``account`` for account (``act_…``) and service
  account (``svc_…``) keys and ``app`` for the rest
* reaching a phone number (the seed has no notification path in v2, so v1.1 is not used):
  ``POST /v2/apps/{appId}/users {externalId: E.164}`` (409: it exists, ``GET
  /v2/apps/{appId}/users/{externalId}``); its personal conversation (``GET
  …/conversations?filter[userId]=`` for a user that existed, else or if none ``POST
  …/conversations {type: personal, participants: [{userId}]}``, 409 → list again); a client
  ``POST …/users/{userId}/clients {matchCriteria: {type, integrationId, phoneNumber},
  confirmation: {type: immediate}, target: {conversationId}}`` (409: already linked); then
  ``POST …/conversations/{conversationId}/messages {author: {type: business}, content: {type:
  text, text}, destination: {integrationId}}`` → 201 ``{messages: [{id, …}]}``. The first id is
  the message's provider id, and receipts match on it.
* the lookups stay off the hot path: a bounded in-process LRU (``cache_size``) maps a number
  to its conversation, so a number costs four requests the first time (per process) and one
  after. Concurrent sends to one number share one lookup. A cached conversation answered 404
  is looked up again once. The adapter keeps nothing in the database.
* errors ``{errors: [{code, title}]}``. Message post: 429 ``retry`` after ``Retry-After``, 409
  (concurrent update, not applied) ``retry``, other 4xx ``rejected`` with the first code, 5xx
  and timeouts ``unknown`` (no idempotency key). Lookups: the message was not posted yet, so a
  5xx, timeout or 429 there is ``retry``; a 4xx is ``rejected`` with SunCo's code.
* webhooks: ``{app, webhook, events: [{id, type, createdAt, payload}]}``, the webhook's secret
  in ``X-API-Key``. ``…:delivery:channel`` → ``sent``, ``…:user`` → ``delivered``,
  ``…:failure`` → ``undelivered`` (accepted, then not delivered; ``error.code`` kept in
  ``error_code``), matched on ``payload.message.id``; ``events[].id`` dedupes.
  ``engine providers subscribe`` creates the webhook (``POST
  …/integrations/{webhook_integration_id}/webhooks``, a custom integration: SunCo hangs
  webhooks off custom or Connect integrations only) with those triggers, ``includeFullSource``
  and ``includeFullUser``.

Where the seed is silent, the adapter takes every plausible variant:

* create user answers 200 or 201 (the seed shows both); any 2xx with ``user.id`` is taken
* a reply's (``conversation:message`` authored by a user) number is the first E.164 value of:
  ``source.client.externalId``, ``source.client.raw.from`` (``includeFullSource``), the
  author's user ``externalId`` (``message.author.user`` or ``payload.user``,
  ``includeFullUser``), or the number of ``author.userId`` when this process created or looked
  that user up. ``parse_webhook`` is synchronous in the Adapter interface (the webhook handler
  calls it before storing), so it cannot ``GET /users/{userId}``; ``includeFullUser`` makes the
  user object arrive instead. A user message with no number (web, app users) is ignored.
* one unreadable event does not sink its envelope (SunCo does not retry a 400): it is kept as
  a receipt with no status (``provider_status`` ``malformed:<type>``, the reason in
  ``error_detail``, stored and settled ``unknown_status``) and the rest is applied; only an
  unreadable envelope is ``MalformedWebhook``
* other ``…:delivery:*`` types are kept unmapped; ``conversation:read`` (conversation-level,
  no message id) and other event types are ignored; our own (business) messages echoed back
  are ignored
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import Field, SecretStr, model_validator

from engine.errors import ConfigError, ProviderPermanentError, ProviderTemporaryError
from engine.providers.base import (
    AccountBase,
    Adapter,
    Inbound,
    MalformedWebhook,
    Outbound,
    Outcome,
    Receipt,
    Response,
    SendResult,
    WebhookEvents,
    as_e164,
    decode_body,
    opt_change_for_reply,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: v2 webhook event types that report on a message we sent, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "conversation:message:delivery:channel": MessageStatus.SENT,
    "conversation:message:delivery:user": MessageStatus.DELIVERED,
    "conversation:message:delivery:failure": MessageStatus.UNDELIVERED,
}
DELIVERY = "conversation:message:delivery:"
MESSAGE = "conversation:message"
#: what ``subscribe`` asks SunCo to post
TRIGGERS = (MESSAGE, *STATUSES)

PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class SunshineAccount(AccountBase):
    """A SunCo app: an API key (id and secret) and the SMS integration to send through."""

    default_base_url: ClassVar[str] = "https://api.smooch.io"

    type: Literal["sunshine"] = "sunshine"
    app_id: str
    key_id: str
    key_secret: SecretStr
    auth: Literal["basic", "jwt"] = "basic"
    jwt_scope: Literal["app", "account"] | None = None  # None: from the key id's prefix
    subdomain: str | None = None  # Zendesk-licensed apps: https://{subdomain}.zendesk.com/sc
    integration_id: str  # the SMS (e.g. Twilio, MessageBird) integration
    client_type: str = "twilio"  # matchCriteria.type of that integration
    webhook_integration_id: str | None = None  # the custom integration webhooks hang off
    cache_size: int = Field(default=50_000, ge=1, le=10_000_000)  # numbers → conversations

    @model_validator(mode="after")
    def _host(self) -> SunshineAccount:
        if self.subdomain is not None:
            if self.base_url is not None:
                raise ValueError("set subdomain or base_url, not both")
            if not _SUBDOMAIN.match(self.subdomain):
                raise ValueError(f"subdomain {self.subdomain!r} is not a host name label")
        return self

    @property
    def url(self) -> str:
        """The Zendesk host for ``subdomain``, else ``base_url`` or the US host."""
        if self.subdomain is not None:
            return f"https://{self.subdomain}.zendesk.com/sc"
        return super().url

    @property
    def scope(self) -> Literal["app", "account"]:
        """The JWT scope: ``jwt_scope``, else ``account`` for ``act_``/``svc_`` keys."""
        if self.jwt_scope is not None:
            return self.jwt_scope
        return "account" if self.key_id.startswith(("act_", "svc_")) else "app"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(signing_input: str, key: bytes) -> str:
    """The base64url HMAC-SHA256 signature of a JWS signing input (RFC 7515)."""
    return _b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def app_jwt(key_id: str, secret: str, scope: str = "app") -> str:
    """A SunCo JWT: ``{alg: HS256, typ: JWT, kid}`` . ``{scope}`` (app or account)."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}))
    payload = _b64url(orjson.dumps({"scope": scope}))
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{hs256(signing_input, secret.encode())}"


class Lru:
    """A bounded mapping that forgets the least recently used key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        """The value, marked as just used; None if absent."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        """Store, dropping the oldest key beyond ``size``."""
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget a key."""
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class SunshineAdapter(Adapter[SunshineAccount]):
    """Client of the SunCo v2 API (users, clients, conversations, messages) and reader of its
    v2 webhooks."""

    account_model = SunshineAccount
    webhook_secret_name = "X-API-Key"
    # 409 is "it exists" on the lookups; send_one makes it ``retry`` for the message post
    retryable_statuses = frozenset({429})

    def __init__(self, name: str, account: SunshineAccount,
                 session: aiohttp.ClientSession) -> None:
        super().__init__(name, account, session)
        self.conversations = Lru(account.cache_size)  # E.164 → conversation id
        self.numbers = Lru(account.cache_size)  # user id → E.164, for replies
        self._resolving: dict[str, asyncio.Task[str | SendResult]] = {}
        self._app = f"/v2/apps/{quote(account.app_id, safe='')}"

    def auth_headers(self) -> dict[str, str]:
        """Basic key id:secret, or a Bearer JWT of the account's scope."""
        key_id, secret = self.account.key_id, self.account.key_secret.get_secret_value()
        if self.account.auth == "jwt":
            return {"Authorization": f"Bearer {app_jwt(key_id, secret, self.account.scope)}"}
        pair = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    # sending

    async def send_one(self, message: Outbound) -> SendResult:
        """The number's conversation (cached, or looked up), then ``POST …/messages``."""
        cached = self.conversations.get(message.to)
        conversation = cached or await self.conversation_for(message.to)
        if isinstance(conversation, SendResult):
            return conversation
        result = await self._post(conversation, message)
        if cached and isinstance(result, Response) and result.status == 404:
            self.conversations.pop(message.to)  # deleted since: not applied, look again
            conversation = await self.conversation_for(message.to)
            if isinstance(conversation, SendResult):
                return conversation
            result = await self._post(conversation, message)
        return _posted(result)

    async def _post(self, conversation: str, message: Outbound) -> Response | SendResult:
        body = {"author": {"type": "business"},
                "content": {"type": "text", "text": message.body},
                "destination": {"integrationId": self.account.integration_id}}
        path = f"{self._app}/conversations/{quote(conversation, safe='')}/messages"
        return await self._request("POST", path, json=body)

    async def conversation_for(self, number: str) -> str | SendResult:
        """The conversation to post to ``number`` in; one lookup at a time per number."""
        task = self._resolving.get(number)
        if task is None:
            task = asyncio.create_task(self._resolve(number))
            self._resolving[number] = task
            task.add_done_callback(lambda _: self._resolving.pop(number, None))
        return await asyncio.shield(task)

    async def _resolve(self, number: str) -> str | SendResult:
        user = await self._user(number)
        if isinstance(user, SendResult):
            return user
        user_id, existed = user
        conversation = await self._conversation(user_id, existed)
        if isinstance(conversation, SendResult):
            return conversation
        linked = await self._link(user_id, number, conversation)
        if isinstance(linked, SendResult):
            return linked
        self.conversations.put(number, conversation)
        return conversation

    async def _user(self, number: str) -> tuple[str, bool] | SendResult:
        """The user whose ``externalId`` is the number, and whether it existed."""
        made = await self._call("POST", f"{self._app}/users", {"externalId": number})
        existed = isinstance(made, Response) and made.status == 409
        if existed:
            made = await self._call("GET", f"{self._app}/users/{quote(number, safe='')}")
        if isinstance(made, SendResult):
            return made
        user_id = _dig(made.json(), "user", "id")
        if user_id is None:
            return SendResult.retry("bad_response", "no user.id")
        self.numbers.put(user_id, number)
        return user_id, existed

    async def _conversation(self, user_id: str, existed: bool) -> str | SendResult:
        """The user's personal conversation: listed if the user existed, else made."""
        if existed and (found := await self._listed(user_id)) is not None:
            return found
        body = {"type": "personal", "participants": [{"userId": user_id}]}
        made = await self._call("POST", f"{self._app}/conversations", body)
        if isinstance(made, Response) and made.status == 409:
            found = await self._listed(user_id)
            return found if found is not None else SendResult.retry("409", "conversation")
        if isinstance(made, SendResult):
            return made
        found = _dig(made.json(), "conversation", "id")
        return found if found is not None else SendResult.retry("bad_response", "no id")

    async def _listed(self, user_id: str) -> str | None:
        """The user's first personal conversation (any, if none says personal)."""
        result = await self._request("GET", f"{self._app}/conversations",
                                     params={"filter[userId]": user_id})
        data = result.json() if isinstance(result, Response) and result.ok else None
        found = data.get("conversations") if isinstance(data, dict) else None
        found = [c for c in found if isinstance(c, dict) and c.get("id")] if isinstance(
            found, list) else []
        personal = [c for c in found if c.get("type") == "personal"] or found
        return str(personal[0]["id"]) if personal else None

    async def _link(self, user_id: str, number: str, conversation: str) -> SendResult | None:
        """Link an SMS client for the number (409: it is linked already)."""
        body = {"matchCriteria": {"type": self.account.client_type,
                                  "integrationId": self.account.integration_id,
                                  "phoneNumber": number},
                "confirmation": {"type": "immediate"},
                "target": {"conversationId": conversation}}
        path = f"{self._app}/users/{quote(user_id, safe='')}/clients"
        made = await self._call("POST", path, body)
        return made if isinstance(made, SendResult) else None

    async def _call(self, method: str, path: str, body: Any = None) -> Response | SendResult:
        """A lookup request: a 2xx or 409 Response, or why the message cannot go now."""
        result = await self._request(method, path, json=body)
        if isinstance(result, SendResult):
            if result.outcome is Outcome.UNKNOWN:  # nothing was posted yet: safe to redo
                return SendResult.retry(result.error_code or "unknown", result.error_detail)
            return result
        if result.ok or result.status == 409:
            return result
        return _error(result)

    # webhooks

    async def subscribe(self, public_url: str) -> dict[str, Any]:
        """Create the v2 webhook (delivery and message triggers, full source and user).

        Returns SunCo's answer, whose ``webhook.secret`` is the account's ``webhook_secret``.
        Raises ConfigError without ``webhook_integration_id``, else ProviderTemporaryError
        or ProviderPermanentError.
        """
        integration = self.account.webhook_integration_id
        if integration is None:
            raise ConfigError(
                f"{self.name}: set webhook_integration_id to a custom integration's id (SunCo "
                "webhooks belong to one; create it in the dashboard)")
        body = {"target": self.webhook_url(public_url), "triggers": list(TRIGGERS),
                "includeFullSource": True, "includeFullUser": True}
        path = f"{self._app}/integrations/{quote(integration, safe='')}/webhooks"
        result = await self._request("POST", path, json=body)
        if isinstance(result, SendResult):
            raise ProviderTemporaryError(f"{self.name}: webhook: {result.error_code} "
                                         f"{result.error_detail or ''}".rstrip())
        if not result.ok:
            error = _error(result)
            raise ProviderPermanentError(
                f"{self.name}: webhook: {error.error_code}: {error.error_detail}")
        data = result.json()
        return data if isinstance(data, dict) else {}

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """A v2 envelope: delivery events become receipts, user messages replies."""
        data = decode_body(content_type or "application/json", body)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise MalformedWebhook("expected {app, webhook, events: [...]}")
        receipts, replies = [], []
        for event in events:
            try:
                kind = _kind(event)
                if kind.startswith(DELIVERY):
                    receipts.append(_receipt(kind, event))
                elif kind == MESSAGE and (reply := self._reply(event)) is not None:
                    replies.append(reply)
            except MalformedWebhook as exc:
                log.warning("unreadable SunCo event kept unapplied: %s", exc,
                            extra={"provider": self.name})
                receipts.append(_unreadable(event, str(exc)))
        opts = [opt_change_for_reply(r.from_, r.text, r.raw) for r in replies]
        return WebhookEvents(tuple(receipts), tuple(replies),
                             tuple(o for o in opts if o is not None))

    def _reply(self, event: dict[str, Any]) -> Inbound | None:
        """A text a user sent from a phone; None for anything else."""
        message = event["payload"].get("message")
        if not isinstance(message, dict):
            raise MalformedWebhook("conversation:message without payload.message")
        author, content = message.get("author"), message.get("content")
        if not isinstance(author, dict) or author.get("type") != "user":
            return None  # our own messages, echoed
        if not isinstance(content, dict) or not isinstance(content.get("text"), str):
            return None  # an image, a location, ...: no text to read
        phone = self._phone(event["payload"], message, author)
        if phone is None:
            log.info("SunCo user message without a phone number ignored",
                     extra={"provider": self.name})
            return None
        return Inbound(phone, content["text"], _opt_str(message.get("id")), None, event)

    def _phone(self, payload: dict[str, Any], message: dict[str, Any],
               author: dict[str, Any]) -> str | None:
        """The number from the client, else the author's user (object or known id)."""
        client = _dig(message, "source", "client", raw=True)
        candidates = [_dig(client, "externalId"), _dig(client, "raw", "from"),
                      _dig(author, "user", "externalId"), _dig(payload, "user", "externalId")]
        user_id = _dig(author, "userId") or _dig(author, "user", "id")
        if user_id is not None:
            candidates.append(self.numbers.get(user_id))
        for candidate in candidates:
            if candidate is not None and PHONE.match(as_e164(candidate)):
                return as_e164(candidate)
        return None


def _posted(result: Response | SendResult) -> SendResult:
    """The message post's answer: the first message id, or what went wrong."""
    if isinstance(result, SendResult):
        return result
    if result.status == 409:  # a concurrent update: SunCo applied nothing
        return SendResult.retry("409", result.body[:200].decode(errors="replace"))
    if not result.ok:
        return _error(result)
    messages = _dig(result.json(), "messages", raw=True)
    first = messages[0] if isinstance(messages, list) and messages else None
    found = _dig(first, "id")
    if found is None:
        return SendResult.unknown("bad_response", "no messages[0].id")
    return SendResult.accepted(found)


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


def _dig(data: Any, *keys: str, raw: bool = False) -> Any:
    """``data[k1][k2]…``; a non-empty string (or, with ``raw``, anything), else None."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    if raw:
        return data
    return str(data) if isinstance(data, str | int) and data != "" else None


def _kind(event: Any) -> str:
    if not isinstance(event, dict):
        raise MalformedWebhook("an event that is not an object")
    kind = event.get("type")
    if not isinstance(kind, str) or not isinstance(event.get("payload"), dict):
        raise MalformedWebhook("event without a type and a payload")
    return kind


def _unreadable(event: Any, reason: str) -> Receipt:
    """An event that could not be read, kept (with no status) so it is not lost."""
    raw = event if isinstance(event, dict) else {"event": event}
    kind = raw.get("type") if isinstance(raw.get("type"), str) else "?"
    return Receipt(provider_message_id=_dig(raw, "payload", "message", "id"), message_id=None,
                   status=None, provider_status=f"malformed:{kind}",
                   error_code="malformed", error_detail=reason, event_id=_dig(raw, "id"),
                   occurred_at=_timestamp(raw.get("createdAt")), raw=raw)


def _receipt(kind: str, event: dict[str, Any]) -> Receipt:
    payload = event["payload"]
    provider_id = _dig(payload, "message", "id")
    if provider_id is None:
        raise MalformedWebhook(f"{kind} without payload.message.id")
    status = STATUSES.get(kind)
    if status is None:
        log.warning("unknown SunCo delivery event %r kept unmapped", kind,
                    extra={"provider": "sunshine"})
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    detail = _dig(error, "message") or _dig(error, "underlyingError", "message")
    return Receipt(
        provider_message_id=provider_id,
        message_id=None,
        status=status,
        provider_status=kind,
        error_code=_opt_str(error.get("code")),
        error_detail=detail,
        event_id=_opt_str(event.get("id")),
        occurred_at=_timestamp(event.get("createdAt")),
        raw=event,
    )


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
