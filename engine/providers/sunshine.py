"""Zendesk Sunshine Conversations (SunCo, formerly Smooch) on the v2 API: account type ``sunshine``.

Events are read by sunshine_events.py; the simulator plays SunCo in
engine/simulator/families/sunshine.py.
From the seed (001, the SunCo v2 reference) and providers.md §4:

* host ``https://{subdomain}.zendesk.com/sc`` (``subdomain``) or ``base_url`` (default
  ``https://api.smooch.io``); Basic key id : secret, or (``auth: jwt``) a Bearer JWT
  ``{alg: HS256, typ: JWT, kid}`` . ``{scope}`` signed with the secret, the scope being
  ``jwt_scope``, else ``account`` for ``act_``/``svc_`` keys and ``app`` for the rest
* a phone number is reached the v2 way (v2 has no notification path; v1.1 is not used):
  ``POST /v2/apps/{appId}/users {externalId: E.164}`` (409: it exists, ``GET …/users/{number}``);
  its personal conversation (listed with ``GET …/conversations?filter[userId]=`` when the user
  existed; else, or if none, ``POST …/conversations {type: personal, participants:
  [{userId}]}``, 409 → list); ``POST …/users/{userId}/clients {matchCriteria: {type,
  integrationId, phoneNumber}, confirmation: {type: immediate}, target: {conversationId}}``
  (409: linked already); ``POST …/conversations/{id}/messages {author: {type: business},
  content: {type: text, text}, destination: {integrationId}}`` → 201 ``{messages: [{id}]}``,
  whose first id receipts match on
* lookups stay off the hot path: a bounded in-process LRU (``cache_size``) maps a number to
  its conversation (four requests per new number per process, then one); concurrent sends to
  one number share a lookup; a cached conversation answered 404 is looked up again once.
  Nothing goes to the database.
* errors ``{errors: [{code, title}]}``. The post: 429 ``retry`` (``Retry-After``), 409
  (concurrent update) ``retry``, 401/403 (``unauthorized``, ``forbidden``) and 402 the
  account's (``account``; engine.accounts), other 4xx ``rejected`` with the first code,
  5xx/timeouts ``unknown`` (no idempotency key). Lookups come before the post, so a 5xx,
  timeout or 429 there is ``retry``; a 401/403 the account's; another 4xx is ``rejected``
  with SunCo's code. ``GET /v2/apps/{appId}`` is the account's ``check``.
* webhooks: ``{app, webhook, events: [{id, type, createdAt, payload}]}``, secret in
  ``X-API-Key``; ``…:delivery:channel`` → sent, ``…:user`` → delivered, ``…:failure`` →
  undelivered (accepted, then not delivered; ``error.code`` kept), on ``payload.message.id``;
  ``events[].id`` dedupes. ``subscribe`` creates the webhook on the custom integration
  ``webhook_integration_id`` (SunCo hangs webhooks off custom integrations only) with those
  triggers, ``includeFullSource`` and ``includeFullUser``.

Where the seed is silent, every plausible variant is taken:

* create user answers 200 or 201 (the seed shows both): any 2xx with ``user.id``
* a user's reply is from the first E.164 of ``source.client.externalId``,
  ``source.client.raw.from``, the author's user ``externalId`` (``message.author.user`` or
  ``payload.user``), or the number of ``author.userId`` if this process made or looked up that
  user. ``parse_webhook`` is synchronous in the Adapter interface (called before storing), so
  it cannot ``GET /users/{userId}``: ``includeFullUser`` brings the user object instead. A
  user message with no number (web, app users) is ignored, as are our own echoed messages.
* one unreadable event does not sink its envelope (SunCo does not retry a 400): it is stored
  as rejected (a receipt with outcome ``rejected``, ``provider_status`` ``malformed:<type>``,
  the reason in ``error_detail``, never applied), the rest applied and the call answered
  200; only an unreadable envelope is MalformedWebhook (400, stored in
  ``rejected_webhooks``)
* other ``…:delivery:*`` types are kept unmapped; ``conversation:read`` (no message id) and
  other event types are ignored
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
    Response,
    SendResult,
    WebhookEvents,
    as_e164,
    client_error,
    decode_body,
    opt_change_for_reply,
)
from engine.providers.sunshine_events import (
    DELIVERY,
    MESSAGE,
    PHONE,
    TRIGGERS,
    dig,
    kind_of,
    opt_str,
    receipt,
    unreadable,
)

log = logging.getLogger(__name__)

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

    def __init__(self, name: str, account: SunshineAccount, session: aiohttp.ClientSession) -> None:
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
        body = {
            "author": {"type": "business"},
            "content": {"type": "text", "text": message.body},
            "destination": {"integrationId": self.account.integration_id},
        }
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
        user_id = dig(made.json(), "user", "id")
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
        found = dig(made.json(), "conversation", "id")
        return found if found is not None else SendResult.retry("bad_response", "no id")

    async def _listed(self, user_id: str) -> str | None:
        """The user's first personal conversation (any, if none says personal)."""
        result = await self._request(
            "GET", f"{self._app}/conversations", params={"filter[userId]": user_id}
        )
        data = result.json() if isinstance(result, Response) and result.ok else None
        found = data.get("conversations") if isinstance(data, dict) else None
        found = (
            [c for c in found if isinstance(c, dict) and c.get("id")]
            if isinstance(found, list)
            else []
        )
        personal = [c for c in found if c.get("type") == "personal"] or found
        return str(personal[0]["id"]) if personal else None

    async def _link(self, user_id: str, number: str, conversation: str) -> SendResult | None:
        """Link an SMS client for the number (409: it is linked already)."""
        body = {
            "matchCriteria": {
                "type": self.account.client_type,
                "integrationId": self.account.integration_id,
                "phoneNumber": number,
            },
            "confirmation": {"type": "immediate"},
            "target": {"conversationId": conversation},
        }
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

    def check_path(self) -> str:
        """``GET /v2/apps/{appId}``."""
        return self._app

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
                "webhooks belong to one; create it in the dashboard)"
            )
        body = {
            "target": self.webhook_url(public_url),
            "triggers": list(TRIGGERS),
            "includeFullSource": True,
            "includeFullUser": True,
        }
        path = f"{self._app}/integrations/{quote(integration, safe='')}/webhooks"
        result = await self._request("POST", path, json=body)
        if isinstance(result, SendResult):
            raise ProviderTemporaryError(
                f"{self.name}: webhook: {result.error_code} {result.error_detail or ''}".rstrip()
            )
        if not result.ok:
            error = _error(result)
            raise ProviderPermanentError(
                f"{self.name}: webhook: {error.error_code}: {error.error_detail}"
            )
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
                kind = kind_of(event)
                if kind.startswith(DELIVERY):
                    receipts.append(receipt(kind, event))
                elif kind == MESSAGE and (reply := self._reply(event)) is not None:
                    replies.append(reply)
            except MalformedWebhook as exc:
                log.warning(
                    "unreadable SunCo event stored as rejected: %s",
                    exc,
                    extra={"provider": self.name},
                )
                receipts.append(unreadable(event, str(exc)))
        opts = [opt_change_for_reply(r.from_, r.text, r.raw) for r in replies]
        return WebhookEvents(
            tuple(receipts), tuple(replies), tuple(o for o in opts if o is not None)
        )

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
            log.info(
                "SunCo user message without a phone number ignored", extra={"provider": self.name}
            )
            return None
        return Inbound(phone, content["text"], opt_str(message.get("id")), None, event)

    def _phone(
        self, payload: dict[str, Any], message: dict[str, Any], author: dict[str, Any]
    ) -> str | None:
        """The number from the client, else the author's user (object or known id)."""
        client = dig(message, "source", "client", raw=True)
        candidates = [
            dig(client, "externalId"),
            dig(client, "raw", "from"),
            dig(author, "user", "externalId"),
            dig(payload, "user", "externalId"),
        ]
        user_id = dig(author, "userId") or dig(author, "user", "id")
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
    messages = dig(result.json(), "messages", raw=True)
    first = messages[0] if isinstance(messages, list) and messages else None
    found = dig(first, "id")
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
        return client_error(response.status, code, detail)
    return SendResult.unknown(code, detail)  # 1xx/3xx: not a documented answer
