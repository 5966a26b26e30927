"""The Sunshine Conversations adapter against mocked HTTP: the v2 flow (user, conversation,
client, message) with the seed's own examples (tests/fixtures/sunshine, verbatim from seed
001), its errors, the JWTs, the webhook subscription and the v2 webhook envelope."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from engine.errors import ConfigError
from engine.providers import ACCOUNT_TYPES
from engine.providers.base import AccountReason, MalformedWebhook, Outcome, SendResult
from engine.providers.sunshine import SunshineAccount, SunshineAdapter, app_jwt, hs256
from engine.status import MessageStatus
from tests.unit.adapter_case import (
    AdapterCase,
    MakeAccount,
    MakeAdapter,
    MakeMessage,
    Sent,
    transport_failures,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sunshine"
BASE = "https://sunco.test"
APP = "5d8cff3cd55b040010928b5b"
KEY_ID = "app_67a0e949f0305f4a391e9d97"
SECRET = "2vErhBhv81FZ5YXbC5XElVcnoNSqz0XjhqSYII4AOT3GCA5UojDCT07Z9NG_4PVzcxv-Zdd7IpeBL-RcXvfOyw"
INTEGRATION = "5e4af71a81966cfff3ef6550"
NUMBER = "+15145555555"
V2 = f"{BASE}/v2/apps/{APP}"
USERS = f"{V2}/users"
CONVERSATIONS = f"{V2}/conversations"
# the ids in the seed's examples
USER_ID = "67a11490f0305f4a391e9f8a"
CONVERSATION_ID = "67a0ecf8f0305f4a391e9db1"
MESSAGE_ID = "5f748c1a2b5315fc007e7977"
CLIENTS = f"{USERS}/{USER_ID}/clients"
MESSAGES = f"{CONVERSATIONS}/{CONVERSATION_ID}/messages"
GET_USER = f"{USERS}/%2B15145555555"
LIST = f"{CONVERSATIONS}?filter%5BuserId%5D={USER_ID}"


def seed(name: str) -> Any:
    """One of the seed's examples, as the seed prints it."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


CASE = AdapterCase(
    "sunco",
    SunshineAccount,
    SunshineAdapter,
    {
        "type": "sunshine",
        "app_id": APP,
        "key_id": KEY_ID,
        "key_secret": SECRET,
        "integration_id": INTEGRATION,
        "base_url": BASE,
        "webhook_secret": "8564b3e6a8b20a4bdb68b05ce9bc5936",
    },
    to=NUMBER,
)


def body(call: Any) -> Any:
    return orjson.loads(call.kwargs["data"])


def cold_path(http: Any, base: str = BASE) -> None:
    """The seed's answers to a first send: user, conversation, client, message."""
    v2 = f"{base}/v2/apps/{APP}"
    http.post(f"{v2}/users", status=201, payload=seed("create_user_response"))
    http.post(f"{v2}/conversations", status=201, payload=seed("create_conversation_response"))
    http.post(f"{v2}/users/{USER_ID}/clients", status=201, payload=seed("create_client_response"))
    http.post(
        f"{v2}/conversations/{CONVERSATION_ID}/messages",
        status=201,
        payload=seed("post_message_response"),
    )


# --- account and auth ------------------------------------------------------------------------


def test_registered_under_its_type(account: MakeAccount) -> None:
    assert ACCOUNT_TYPES["sunshine"] is SunshineAccount
    assert account(base_url=None).url == "https://api.smooch.io"


def test_the_zendesk_host_from_the_subdomain(account: MakeAccount) -> None:
    assert account(base_url=None, subdomain="acme").url == "https://acme.zendesk.com/sc"
    with pytest.raises(ValidationError, match="not both"):
        account(subdomain="acme")
    with pytest.raises(ValidationError, match="host name"):
        account(base_url=None, subdomain="acme.evil.com/x")


def test_the_v1_notifications_path_is_gone(account: MakeAccount) -> None:
    with pytest.raises(ValidationError, match="notifications_path"):
        account(notifications_path="/v1.1/apps/{app_id}/notifications")


def test_auth_must_be_basic_or_jwt(account: MakeAccount) -> None:
    with pytest.raises(ValidationError, match="auth"):
        account(auth="oauth")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_hs256_matches_the_rfc_7515_vector() -> None:
    """RFC 7515 Appendix A.1: a published HS256 JWS, signing input, key and signature."""
    k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
    key = base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))
    signing_input = (
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    )
    assert hs256(signing_input, key) == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def test_app_jwt_against_an_independent_computation() -> None:
    header = _b64url(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY_ID}, separators=(",", ":")).encode()
    )
    payload = _b64url(json.dumps({"scope": "app"}, separators=(",", ":")).encode())
    signature = _b64url(
        hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    )
    assert app_jwt(KEY_ID, SECRET) == f"{header}.{payload}.{signature}"


@pytest.mark.parametrize(
    ("key_id", "scope", "payload"),
    [
        ("app_67a0e949f0305f4a391e9d97", None, "jwt_payload_app"),
        ("act_5963ceb97cde542d000dbdb1", None, "jwt_payload_account"),
        ("svc_5963ceb97cde542d000dbdb1", None, "jwt_payload_account"),
        ("app_67a0e949f0305f4a391e9d97", "account", "jwt_payload_account"),
    ],
)
async def test_jwt_scope_follows_the_key(
    http: Any,
    key_id: str,
    scope: str | None,
    payload: str,
    message: MakeMessage,
    adapter: MakeAdapter,
    sent: Sent,
) -> None:
    cold_path(http)
    await adapter(auth="jwt", key_id=key_id, jwt_scope=scope).send([message()])
    (call,) = sent("POST", f"{V2}/users")
    token = call.kwargs["headers"]["Authorization"].removeprefix("Bearer ")
    header, claims, _ = token.split(".")
    expected_header = seed("jwt_header")  # the seed's example is an account key's
    assert _unb64(header) == {**expected_header, "kid": key_id}
    assert _unb64(claims) == seed(payload)
    assert token == f"{header}.{claims}.{hs256(f'{header}.{claims}', SECRET.encode())}"


# --- sending: the v2 flow --------------------------------------------------------------------


async def test_first_send_creates_user_conversation_and_client(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    cold_path(http)
    sunco = adapter()
    assert await sunco.send([message(42)]) == [SendResult(Outcome.ACCEPTED, MESSAGE_ID)]
    (user,) = sent("POST", USERS)
    assert body(user) == {"externalId": NUMBER}
    (conversation,) = sent("POST", CONVERSATIONS)
    assert body(conversation) == {"type": "personal", "participants": [{"userId": USER_ID}]}
    (client,) = sent("POST", CLIENTS)
    assert body(client) == {
        "matchCriteria": {"type": "twilio", "integrationId": INTEGRATION, "phoneNumber": NUMBER},
        "confirmation": {"type": "immediate"},
        "target": {"conversationId": CONVERSATION_ID},
    }
    (post,) = sent("POST", MESSAGES)
    assert body(post) == {
        "author": {"type": "business"},
        "content": {"type": "text", "text": "Hello"},
        "destination": {"integrationId": INTEGRATION},
    }
    expected = base64.b64encode(f"{KEY_ID}:{SECRET}".encode()).decode()
    assert post.kwargs["headers"]["Authorization"] == f"Basic {expected}"
    assert post.kwargs["headers"]["Content-Type"] == "application/json"


async def test_later_sends_to_the_number_post_only_the_message(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    cold_path(http)
    http.post(MESSAGES, status=201, payload={"messages": [{"id": "second"}]})
    sunco = adapter()
    await sunco.send([message(1)])
    (second,) = await sunco.send([message(2, body="Again")])
    assert second == SendResult(Outcome.ACCEPTED, "second")
    assert [len(sent("POST", u)) for u in (USERS, CONVERSATIONS, CLIENTS, MESSAGES)] == [1, 1, 1, 2]


async def test_an_existing_user_is_looked_up_and_its_conversation_reused(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    """409 on create: the user exists (a restart, another engine): GET it by externalId,
    list its conversations, link the client (409: linked already), post."""
    conflict = {"errors": [{"code": "conflict", "title": "User already exists"}]}
    http.post(USERS, status=409, payload=conflict)
    http.get(GET_USER, status=200, payload=seed("get_user_response"))
    http.get(
        LIST,
        status=200,
        payload={
            "conversations": [seed("create_conversation_response")["conversation"]],
            "meta": {"hasMore": False},
        },
    )
    http.post(CLIENTS, status=409, payload={"errors": [{"code": "conflict", "title": "x"}]})
    http.post(MESSAGES, status=201, payload=seed("post_message_response"))
    (result,) = await adapter().send([message()])
    assert result == SendResult(Outcome.ACCEPTED, MESSAGE_ID)
    assert len(sent("GET", GET_USER)) == 1
    assert sent("POST", CONVERSATIONS) == []


async def test_an_existing_user_without_a_conversation_gets_one(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(USERS, status=409, payload={"errors": [{"code": "conflict", "title": "x"}]})
    http.get(GET_USER, status=200, payload=seed("get_user_response"))
    http.get(LIST, status=200, payload={"conversations": [], "meta": {"hasMore": False}})
    http.post(CONVERSATIONS, status=201, payload=seed("create_conversation_response"))
    http.post(CLIENTS, status=201, payload=seed("create_client_response"))
    http.post(MESSAGES, status=201, payload=seed("post_message_response"))
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.ACCEPTED
    assert len(sent("POST", CONVERSATIONS)) == 1


async def test_the_zendesk_host(http: Any, message: MakeMessage, adapter: MakeAdapter) -> None:
    cold_path(http, "https://acme.zendesk.com/sc")
    (result,) = await adapter(base_url=None, subdomain="acme").send([message()])
    assert result == SendResult(Outcome.ACCEPTED, MESSAGE_ID)


async def test_concurrent_sends_to_one_number_share_one_lookup(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    cold_path(http)
    http.post(MESSAGES, status=201, payload={"messages": [{"id": "m2"}]})
    sunco = adapter()
    results = await asyncio.gather(sunco.send([message(1)]), sunco.send([message(2)]))
    assert {r.provider_message_id for (r,) in results} == {MESSAGE_ID, "m2"}
    assert len(sent("POST", USERS)) == 1


async def test_the_cache_is_bounded(http: Any, message: MakeMessage, adapter: MakeAdapter) -> None:
    sunco = adapter(cache_size=1)
    for number in ("+15145550001", "+15145550002"):
        cold_path(http)
        await sunco.send([message(to=number)])
    assert len(sunco.conversations) == 1
    assert sunco.conversations.get("+15145550001") is None
    assert sunco.conversations.get("+15145550002") == CONVERSATION_ID


async def test_a_cached_conversation_gone_is_looked_up_again(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    sunco = adapter()
    sunco.conversations.put(NUMBER, "deleted")
    http.post(
        f"{CONVERSATIONS}/deleted/messages",
        status=404,
        payload={"errors": [{"code": "not_found", "title": "Conversation not found"}]},
    )
    cold_path(http)
    (result,) = await sunco.send([message()])
    assert result == SendResult(Outcome.ACCEPTED, MESSAGE_ID)
    assert sunco.conversations.get(NUMBER) == CONVERSATION_ID


@pytest.mark.parametrize(
    "payload",
    [{"messages": []}, {"notification": {"_id": "x"}}, None],
    ids=["empty", "v1-shape", "not-json"],
)
async def test_an_unreadable_2xx_is_unknown(
    http: Any, payload: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    sunco = adapter()
    sunco.conversations.put(NUMBER, CONVERSATION_ID)
    if payload is None:
        http.post(MESSAGES, status=201, body=b"created")
    else:
        http.post(MESSAGES, status=201, payload=payload)
    (result,) = await sunco.send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "bad_response")


@pytest.mark.parametrize(
    ("status", "code", "title"),
    [
        (400, "bad_request", "content.text is required"),
        (401, "unauthorized", "Authorization is required"),
        (402, "payment_required", "Plan limit reached"),
        (403, "forbidden", "Forbidden"),
        (413, "payload_too_large", "Request entity too large"),
        (423, "locked", "Message limit of 30000 per conversation reached."),
    ],
)
async def test_4xx_on_the_post_are_rejections_with_the_error_code(
    http: Any, status: int, code: str, title: str, message: MakeMessage, adapter: MakeAdapter
) -> None:
    sunco = adapter()
    sunco.conversations.put(NUMBER, CONVERSATION_ID)
    http.post(MESSAGES, status=status, payload={"errors": [{"code": code, "title": title}]})
    (result,) = await sunco.send([message()])
    # 401/402/403 are the account's problem, not the message's (issue 17 item 1)
    assert (result.outcome, result.error_code, result.error_detail) == (
        (Outcome.ACCOUNT if status in (401, 402, 403) else Outcome.REJECTED),
        code,
        title,
    )


async def test_the_seed_error_example_is_the_accounts_problem(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(USERS, status=401, payload=seed("error_response"))
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.reason, result.error_code, result.error_detail) == (
        Outcome.ACCOUNT,
        AccountReason.AUTH,
        "unauthorized",
        "Authorization is required",
    )


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "after"),
    [
        (429, {"Retry-After": "30"}, Outcome.RETRY, 30),
        (409, {}, Outcome.RETRY, None),
        (500, {}, Outcome.UNKNOWN, None),
        (503, {}, Outcome.UNKNOWN, None),
    ],
)
async def test_the_post_retry_and_unknown(
    http: Any,
    status: int,
    headers: dict[str, str],
    outcome: Outcome,
    after: float | None,
    message: MakeMessage,
    adapter: MakeAdapter,
) -> None:
    sunco = adapter()
    sunco.conversations.put(NUMBER, CONVERSATION_ID)
    http.post(
        MESSAGES, status=status, headers=headers, payload={"errors": [{"code": "x", "title": "y"}]}
    )
    (result,) = await sunco.send([message()])
    assert (result.outcome, result.retry_after) == (outcome, after)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "body": b"oops"},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ServerDisconnectedError()},
    ],
    ids=["500", "timeout", "dropped"],
)
async def test_a_lookup_that_fails_is_retry_not_unknown(
    http: Any, failure: dict[str, Any], message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    """Nothing was posted yet, so the message is provably not sent."""
    http.post(USERS, **failure)
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.RETRY
    assert sent("POST", MESSAGES) == []


async def test_a_number_the_client_refuses_is_rejected(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(USERS, status=201, payload=seed("create_user_response"))
    http.post(CONVERSATIONS, status=201, payload=seed("create_conversation_response"))
    http.post(
        CLIENTS,
        status=400,
        payload={
            "errors": [{"code": "bad_request", "title": "matchCriteria.phoneNumber must be E.164"}]
        },
    )
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.REJECTED, "bad_request")


@pytest.mark.parametrize(
    ("exception", "outcome"),
    transport_failures("sunco.test"),
)
async def test_transport_failures_on_the_post(
    http: Any, exception: Exception, outcome: Outcome, message: MakeMessage, adapter: MakeAdapter
) -> None:
    sunco = adapter()
    sunco.conversations.put(NUMBER, CONVERSATION_ID)
    http.post(MESSAGES, exception=exception)
    (result,) = await sunco.send([message()])
    assert result.outcome is outcome


# --- the webhook subscription ----------------------------------------------------------------


async def test_subscribe_creates_the_webhook(http: Any, adapter: MakeAdapter, sent: Sent) -> None:
    hooks = f"{V2}/integrations/5e554d2cac66fb73a3c01871/webhooks"
    http.post(hooks, status=201, payload=seed("webhook_response"))
    sunco = adapter(webhook_integration_id="5e554d2cac66fb73a3c01871")
    made = await sunco.subscribe("https://engine.example.com")
    assert made == seed("webhook_response")
    (call,) = sent("POST", hooks)
    assert body(call) == {
        "target": "https://engine.example.com/webhooks/sunco",
        "triggers": [
            "conversation:message",
            "conversation:message:delivery:channel",
            "conversation:message:delivery:user",
            "conversation:message:delivery:failure",
        ],
        "includeFullSource": True,
        "includeFullUser": True,
    }


async def test_subscribe_needs_the_custom_integration(adapter: MakeAdapter) -> None:
    with pytest.raises(ConfigError, match="webhook_integration_id"):
        await adapter().subscribe("https://engine.example.com")


# --- webhooks --------------------------------------------------------------------------------

JSON = "application/json"


def envelope(*events: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "app": {"id": APP},
            "webhook": {"id": "5e554d2cac66fb73a3c01871", "version": "v2"},
            "events": list(events),
        }
    )


def delivery(
    kind: str,
    event_id: str = "61290a62c64b3af1ff868714",
    message_id: str = "5f748c1a2b5315fc007e7977",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": f"conversation:message:delivery:{kind}",
        "payload": {
            "user": {"id": "6a2343df57be6fe0f98efc33"},
            "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
            "message": {"id": message_id},
            "destination": {"type": "twilio", "integrationId": INTEGRATION},
            "externalMessages": [{"id": "SM123"}],
            "isFinalEvent": kind != "channel",
            **extra,
        },
    }


def user_message(
    text: str, client: dict[str, Any] | None = None, author: str = "user", **by: Any
) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "twilio", "integrationId": INTEGRATION}
    if client is not None:
        source["client"] = client
    return {
        "id": "evt-in-1",
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": "conversation:message",
        "payload": {
            "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
            "message": {
                "id": "5f40256af057d0000dda9bd7",
                "received": "2021-08-27T15:53:06Z",
                "author": {"type": author, "userId": "u1", **by},
                "content": {"type": "text", "text": text},
                "source": source,
            },
        },
    }


TWILIO_CLIENT = {
    "id": "61290a4f7821c3f206d690a3",
    "type": "twilio",
    "status": "active",
    "integrationId": INTEGRATION,
    "externalId": "+15145555555",
    "displayName": "+1 514-555-5555",
}


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("channel", MessageStatus.SENT),
        ("user", MessageStatus.DELIVERED),
        ("failure", MessageStatus.UNDELIVERED),
    ],
)
def test_delivery_events(kind: str, status: MessageStatus, adapter: MakeAdapter) -> None:
    events = adapter().parse_webhook(JSON, envelope(delivery(kind)), {})
    (receipt,) = events.receipts
    assert receipt.status is status
    assert receipt.provider_message_id == "5f748c1a2b5315fc007e7977"
    assert receipt.provider_status == f"conversation:message:delivery:{kind}"
    assert receipt.event_id == "61290a62c64b3af1ff868714"
    assert receipt.occurred_at == datetime(2021, 8, 27, 15, 53, 6, 744000, tzinfo=UTC)
    assert receipt.message_id is None
    assert not events.inbound


def test_failure_carries_the_error(adapter: MakeAdapter) -> None:
    body = envelope(
        delivery(
            "failure", error={"code": "bad_request", "message": "Carrier rejected the message"}
        )
    )
    (receipt,) = adapter().parse_webhook(JSON, body, {}).receipts
    assert (receipt.error_code, receipt.error_detail) == (
        "bad_request",
        "Carrier rejected the message",
    )


def test_failure_with_an_underlying_error(adapter: MakeAdapter) -> None:
    body = envelope(
        delivery(
            "failure",
            error={
                "code": "bad_request",
                "underlyingError": {
                    "message": "This message is being sent outside the allowed window",
                    "code": 10,
                },
            },
        )
    )
    (receipt,) = adapter().parse_webhook(JSON, body, {}).receipts
    assert receipt.error_detail == "This message is being sent outside the allowed window"


def test_several_events_in_one_call(adapter: MakeAdapter) -> None:
    body = envelope(
        delivery("channel", "e1", "m1"),
        delivery("user", "e2", "m1"),
        delivery("channel", "e3", "m2"),
    )
    receipts = adapter().parse_webhook(JSON, body, {}).receipts
    assert [(r.event_id, r.provider_message_id, r.status) for r in receipts] == [
        ("e1", "m1", MessageStatus.SENT),
        ("e2", "m1", MessageStatus.DELIVERED),
        ("e3", "m2", MessageStatus.SENT),
    ]


def test_unknown_delivery_type_is_kept_unmapped(adapter: MakeAdapter) -> None:
    (receipt,) = adapter().parse_webhook(JSON, envelope(delivery("carrier")), {}).receipts
    assert receipt.status is None
    assert receipt.provider_status == "conversation:message:delivery:carrier"


def test_other_event_types_are_ignored(adapter: MakeAdapter) -> None:
    client_add = {
        "id": "e9",
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": "client:add",
        "payload": {"client": TWILIO_CLIENT, "reason": "channelLinking"},
    }
    read = {
        "id": "e10",
        "createdAt": "2021-08-27T15:53:06.744Z",
        "type": "conversation:read",
        "payload": {"conversation": {"id": "c"}, "activity": {"type": "conversation:read"}},
    }
    events = adapter().parse_webhook(JSON, envelope(client_add, read), {})
    assert (events.receipts, events.inbound, events.opt_changes) == ((), (), ())


def test_a_user_reply_is_inbound(adapter: MakeAdapter) -> None:
    body = envelope(user_message("Thanks!", TWILIO_CLIENT))
    events = adapter().parse_webhook(JSON, body, {})
    (reply,) = events.inbound
    assert (reply.from_, reply.text, reply.provider_message_id) == (
        "+15145555555",
        "Thanks!",
        "5f40256af057d0000dda9bd7",
    )
    assert not events.opt_changes
    assert not events.receipts


@pytest.mark.parametrize(
    ("word", "opted_out"),
    [("STOP", True), ("stop.", True), ("Unsubscribe", True), ("START", False)],
)
def test_stop_and_start_replies_are_opt_changes(
    word: str, opted_out: bool, adapter: MakeAdapter
) -> None:
    body = envelope(user_message(word, TWILIO_CLIENT))
    (change,) = adapter().parse_webhook(JSON, body, {}).opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+15145555555", opted_out, "sms")


def test_the_phone_may_come_from_the_raw_client(adapter: MakeAdapter) -> None:
    client = {**TWILIO_CLIENT, "externalId": "user-7", "raw": {"from": "15145550000"}}
    (reply,) = adapter().parse_webhook(JSON, envelope(user_message("STOP", client)), {}).inbound
    assert reply.from_ == "+15145550000"


@pytest.mark.parametrize(
    "event",
    [
        user_message("STOP"),  # no client, no user object, a user id never seen
        user_message("STOP", {**TWILIO_CLIENT, "externalId": "psid-123", "type": "messenger"}),
        user_message("STOP", TWILIO_CLIENT, author="business"),  # our own message echoed
    ],
    ids=["no-client", "not-a-phone", "business"],
)
def test_messages_without_a_phone_or_from_us_are_ignored(
    event: dict[str, Any], adapter: MakeAdapter
) -> None:
    events = adapter().parse_webhook(JSON, envelope(event), {})
    assert (events.inbound, events.opt_changes) == ((), ())


def test_a_non_text_user_message_is_ignored(adapter: MakeAdapter) -> None:
    event = user_message("x", TWILIO_CLIENT)
    event["payload"]["message"]["content"] = {"type": "image", "mediaUrl": "https://x/y.png"}
    assert adapter().parse_webhook(JSON, envelope(event), {}).inbound == ()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (JSON, b"{not json", "JSON"),
        (JSON, b"[]", "events"),
        (JSON, orjson.dumps({"app": {"id": APP}}), "events"),
        ("text/plain", b"events", "content type"),
    ],
)
def test_malformed_envelopes(
    content_type: str, body: bytes, reason: str, adapter: MakeAdapter
) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter().parse_webhook(content_type, body, {})


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (1, "not an object"),
        ({"id": "e", "payload": {}}, "type"),
        ({"id": "e", "type": "conversation:message:delivery:user"}, "payload"),
        (delivery("user", event_id="e", message_id=""), "message.id"),
        ({"id": "e", "type": "conversation:message", "payload": {}}, "payload.message"),
    ],
)
def test_one_bad_event_is_kept_and_the_rest_applied(
    bad: Any, reason: str, adapter: MakeAdapter
) -> None:
    """SunCo does not retry a 400: the envelope is read, the bad event kept with no status."""
    body = envelope(delivery("user", "e1", "m1"), bad, user_message("STOP", TWILIO_CLIENT))
    events = adapter().parse_webhook(JSON, body, {})
    good, kept = events.receipts
    assert (good.provider_message_id, good.status) == ("m1", MessageStatus.DELIVERED)
    assert kept.status is None and kept.provider_status.startswith("malformed:")
    assert kept.error_code == "malformed" and reason in (kept.error_detail or "")
    assert [o.phone for o in events.opt_changes] == ["+15145555555"]


def test_webhook_secret_in_the_x_api_key_header(adapter: MakeAdapter) -> None:
    sunco = adapter()
    secret = "8564b3e6a8b20a4bdb68b05ce9bc5936"
    assert sunco.webhook_authentic({"X-API-Key": secret}, {})
    assert sunco.webhook_authentic({"x-api-key": secret}, {})
    assert not sunco.webhook_authentic({"X-API-Key": "wrong"}, {})
    assert not sunco.webhook_authentic({"X-Webhook-Secret": secret}, {})
    assert not sunco.webhook_authentic({}, {})
    assert sunco.webhook_url("https://engine.example.com/") == (
        "https://engine.example.com/webhooks/sunco"
    )


@pytest.mark.parametrize(
    "event",
    [
        user_message("STOP", user={"id": "u1", "externalId": "+15145555555"}),
        {
            **user_message("STOP"),
            "payload": {
                **user_message("STOP")["payload"],
                "user": {"id": "u1", "externalId": "15145555555"},
            },
        },
    ],
    ids=["author.user", "payload.user"],
)
def test_a_reply_without_a_client_is_resolved_through_the_user(
    event: dict[str, Any], adapter: MakeAdapter
) -> None:
    events = adapter().parse_webhook(JSON, envelope(event), {})
    assert [(i.from_, i.text) for i in events.inbound] == [("+15145555555", "STOP")]
    assert [(o.phone, o.opted_out) for o in events.opt_changes] == [("+15145555555", True)]


async def test_a_reply_with_only_a_user_id_is_resolved_from_our_own_send(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    """parse_webhook cannot do I/O; the user this adapter created carries the number."""
    cold_path(http)
    sunco = adapter()
    await sunco.send([message()])
    event = user_message("STOP")
    event["payload"]["message"]["author"]["userId"] = USER_ID
    (reply,) = sunco.parse_webhook(JSON, envelope(event), {}).inbound
    assert reply.from_ == NUMBER


def test_the_seed_client_add_event_is_ignored(adapter: MakeAdapter) -> None:
    body = (FIXTURES / "client_add_event.json").read_bytes()
    events = adapter().parse_webhook(JSON, body, {})
    assert (events.receipts, events.inbound, events.opt_changes) == ((), (), ())
