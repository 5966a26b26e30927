"""The Sunshine Conversations adapter against mocked HTTP: the Notification API, its errors,
the app JWT, and the v2 webhook envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError
from yarl import URL

from engine.providers import ACCOUNT_TYPES, adapter_for
from engine.providers.base import MalformedWebhook, Outbound, Outcome, SendResult
from engine.providers.sunshine import SunshineAccount, SunshineAdapter, app_jwt, hs256
from engine.status import MessageStatus
from tests.aioresponses_compat import MockedHTTP

BASE = "https://sunco.test"
APP = "5d8cff3cd55b040010928b5b"
KEY_ID = "app_67a0e949f0305f4a391e9d97"
SECRET = "2vErhBhv81FZ5YXbC5XElVcnoNSqz0XjhqSYII4AOT3GCA5UojDCT07Z9NG_4PVzcxv-Zdd7IpeBL-RcXvfOyw"
INTEGRATION = "5e4af71a81966cfff3ef6550"
SEND = f"{BASE}/v1.1/apps/{APP}/notifications"


def account(**extra: Any) -> SunshineAccount:
    return SunshineAccount.model_validate(
        {"type": "sunshine", "app_id": APP, "key_id": KEY_ID, "key_secret": SECRET,
         "integration_id": INTEGRATION, "base_url": BASE,
         "webhook_secret": "8564b3e6a8b20a4bdb68b05ce9bc5936", **extra}
    )


def message(n: int = 1, to: str = "+15145555555", body: str = "Hello") -> Outbound:
    return Outbound(message_id=n, to=to, body=body, sender=None)


@pytest.fixture
def http() -> Any:
    with MockedHTTP() as mocked:
        yield mocked


def adapter(session: aiohttp.ClientSession, **extra: Any) -> SunshineAdapter:
    made = adapter_for("sunco", account(**extra), session)
    assert isinstance(made, SunshineAdapter)
    return made


def sent(http: Any, method: str, url: str) -> list[Any]:
    calls: list[Any] = http.requests[(method, URL(url))]
    return calls


# --- account and auth ------------------------------------------------------------------------


def test_registered_under_its_type() -> None:
    assert ACCOUNT_TYPES["sunshine"] is SunshineAccount
    assert SunshineAccount.default_base_url == "https://api.smooch.io"
    assert account().notifications_path == "/v1.1/apps/{app_id}/notifications"


@pytest.mark.parametrize("path", ["/v1/apps/{appId}/notifications", "v1/apps/{app_id}/x"])
def test_notifications_path_is_checked(path: str) -> None:
    with pytest.raises(ValidationError, match="notifications_path"):
        account(notifications_path=path)


def test_auth_must_be_basic_or_jwt() -> None:
    with pytest.raises(ValidationError, match="auth"):
        account(auth="oauth")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY_ID},
                                separators=(",", ":")).encode())
    payload = _b64url(json.dumps({"scope": "app"}, separators=(",", ":")).encode())
    signature = _b64url(hmac.new(SECRET.encode(), f"{header}.{payload}".encode(),
                                 hashlib.sha256).digest())
    assert app_jwt(KEY_ID, SECRET) == f"{header}.{payload}.{signature}"
    assert app_jwt(KEY_ID, "k") == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImFwcF82N2EwZTk0OWYwMzA1ZjRhMzkxZTlkOTcifQ"
        ".eyJzY29wZSI6ImFwcCJ9.nGcoaoKu4qsCFzLu5SXyXFW3iwDC2hB0miU4cJ5W4_0"  # openssl dgst -hmac
    )


# --- sending ---------------------------------------------------------------------------------


async def test_notification_request_as_documented(
    session: aiohttp.ClientSession, http: Any
) -> None:
    http.post(SEND, status=201, payload={"notification": {"_id": "5f748c1a2b5315fc007e7977"}})
    results = await adapter(session).send([message(42)])
    assert results == [SendResult(Outcome.ACCEPTED, "5f748c1a2b5315fc007e7977")]
    (call,) = sent(http, "POST", SEND)
    assert orjson.loads(call.kwargs["data"]) == {
        "destination": {"integrationId": INTEGRATION, "destinationId": "+15145555555"},
        "author": {"role": "appMaker"},
        "message": {"type": "text", "text": "Hello"},
    }
    headers = call.kwargs["headers"]
    expected = base64.b64encode(f"{KEY_ID}:{SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Content-Type"] == "application/json"


async def test_jwt_auth_sends_the_app_jwt(session: aiohttp.ClientSession, http: Any) -> None:
    http.post(SEND, status=201, payload={"notification": {"_id": "n1"}})
    await adapter(session, auth="jwt").send([message()])
    (call,) = sent(http, "POST", SEND)
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {app_jwt(KEY_ID, SECRET)}"


async def test_the_notification_path_is_a_setting(
    session: aiohttp.ClientSession, http: Any
) -> None:
    v1 = f"{BASE}/v1/apps/{APP}/notifications"
    http.post(v1, status=201, payload={"notification": {"_id": "n1"}})
    (result,) = await adapter(session, notifications_path="/v1/apps/{app_id}/notifications").send(
        [message()])
    assert result.outcome is Outcome.ACCEPTED
    assert len(sent(http, "POST", v1)) == 1


@pytest.mark.parametrize(
    "payload", [{"notification": {}}, {"messages": []}, None], ids=["no-id", "other", "not-json"]
)
async def test_an_unreadable_2xx_is_unknown(
    session: aiohttp.ClientSession, http: Any, payload: Any
) -> None:
    if payload is None:
        http.post(SEND, status=201, body=b"created")
    else:
        http.post(SEND, status=201, payload=payload)
    (result,) = await adapter(session).send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "bad_response")


@pytest.mark.parametrize(
    ("status", "code", "title"),
    [
        (400, "bad_request", "destinationId is invalid"),
        (401, "unauthorized", "Authorization is required"),
        (402, "payment_required", "Plan limit reached"),
        (403, "forbidden", "Forbidden"),
        (404, "not_found", "App not found"),
        (413, "payload_too_large", "Request entity too large"),
        (423, "locked", "Message limit of 30000 per conversation reached."),
    ],
)
async def test_4xx_are_rejections_with_the_error_code(
    session: aiohttp.ClientSession, http: Any, status: int, code: str, title: str
) -> None:
    http.post(SEND, status=status, payload={"errors": [{"code": code, "title": title}]})
    (result,) = await adapter(session).send([message()])
    assert (result.outcome, result.error_code, result.error_detail) == (
        Outcome.REJECTED, code, title)


async def test_several_400_errors_keep_every_title(
    session: aiohttp.ClientSession, http: Any
) -> None:
    http.post(SEND, status=400, payload={"errors": [
        {"code": "bad_request", "title": "a is required"},
        {"code": "bad_request", "title": "b is required"}]})
    (result,) = await adapter(session).send([message()])
    assert result.error_detail == "a is required; b is required"


async def test_a_4xx_without_a_body_uses_the_status(
    session: aiohttp.ClientSession, http: Any
) -> None:
    http.post(SEND, status=400, body=b"")
    (result,) = await adapter(session).send([message()])
    assert (result.outcome, result.error_code) == (Outcome.REJECTED, "400")


async def test_429_is_retry_after_the_given_seconds(
    session: aiohttp.ClientSession, http: Any
) -> None:
    http.post(SEND, status=429, headers={"Retry-After": "30"},
              payload={"errors": [{"code": "too_many_requests", "title": "Slow down"}]})
    (result,) = await adapter(session).send([message()])
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 30)


async def test_409_conflict_is_retry(session: aiohttp.ClientSession, http: Any) -> None:
    http.post(SEND, status=409, payload={"errors": [{"code": "conflict", "title": "x"}]})
    (result,) = await adapter(session).send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "409")


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unknown(session: aiohttp.ClientSession, http: Any, status: int) -> None:
    http.post(SEND, status=status, body=b"oops")
    sunco = adapter(session)
    assert not sunco.idempotent_sends
    (result,) = await sunco.send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, str(status))


def _refused() -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="sunco.test", port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        (TimeoutError(), Outcome.UNKNOWN),
        (aiohttp.ServerDisconnectedError(), Outcome.UNKNOWN),
        (aiohttp.ConnectionTimeoutError("connect timeout"), Outcome.RETRY),
        (_refused(), Outcome.RETRY),
    ],
    ids=["timeout", "dropped", "connect-timeout", "refused"],
)
async def test_transport_failures(
    session: aiohttp.ClientSession, http: Any, exception: Exception, outcome: Outcome
) -> None:
    http.post(SEND, exception=exception)
    (result,) = await adapter(session).send([message()])
    assert result.outcome is outcome


# --- webhooks --------------------------------------------------------------------------------

JSON = "application/json"


def envelope(*events: dict[str, Any]) -> bytes:
    return orjson.dumps({"app": {"id": APP}, "webhook": {"id": "5e554d2cac66fb73a3c01871",
                                                          "version": "v2"},
                         "events": list(events)})


def delivery(kind: str, event_id: str = "61290a62c64b3af1ff868714",
             message_id: str = "5f748c1a2b5315fc007e7977", **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "createdAt": "2021-08-27T15:53:06.744Z",
            "type": f"conversation:message:delivery:{kind}", "payload": {
                "user": {"id": "6a2343df57be6fe0f98efc33"},
                "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
                "message": {"id": message_id},
                "destination": {"type": "twilio", "integrationId": INTEGRATION},
                "externalMessages": [{"id": "SM123"}], "isFinalEvent": kind != "channel",
                **extra}}


def user_message(text: str, client: dict[str, Any] | None = None,
                 author: str = "user") -> dict[str, Any]:
    source: dict[str, Any] = {"type": "twilio", "integrationId": INTEGRATION}
    if client is not None:
        source["client"] = client
    return {"id": "evt-in-1", "createdAt": "2021-08-27T15:53:06.744Z",
            "type": "conversation:message", "payload": {
                "conversation": {"id": "c2c8710dedf8f26ee6e9a68f", "type": "personal"},
                "message": {"id": "5f40256af057d0000dda9bd7", "received": "2021-08-27T15:53:06Z",
                            "author": {"type": author, "userId": "u1"},
                            "content": {"type": "text", "text": text}, "source": source}}}


TWILIO_CLIENT = {"id": "61290a4f7821c3f206d690a3", "type": "twilio", "status": "active",
                 "integrationId": INTEGRATION, "externalId": "+15145555555",
                 "displayName": "+1 514-555-5555"}


@pytest.mark.parametrize(
    ("kind", "status"),
    [("channel", MessageStatus.SENT), ("user", MessageStatus.DELIVERED),
     ("failure", MessageStatus.FAILED)],
)
def test_delivery_events(session: aiohttp.ClientSession, kind: str, status: MessageStatus) -> None:
    events = adapter(session).parse_webhook(JSON, envelope(delivery(kind)), {})
    (receipt,) = events.receipts
    assert receipt.status is status
    assert receipt.provider_message_id == "5f748c1a2b5315fc007e7977"
    assert receipt.provider_status == f"conversation:message:delivery:{kind}"
    assert receipt.event_id == "61290a62c64b3af1ff868714"
    assert receipt.occurred_at == datetime(2021, 8, 27, 15, 53, 6, 744000, tzinfo=UTC)
    assert receipt.message_id is None
    assert not events.inbound


def test_failure_carries_the_error(session: aiohttp.ClientSession) -> None:
    body = envelope(delivery("failure", error={"code": "bad_request",
                                                "message": "Carrier rejected the message"}))
    (receipt,) = adapter(session).parse_webhook(JSON, body, {}).receipts
    assert (receipt.error_code, receipt.error_detail) == (
        "bad_request", "Carrier rejected the message")


def test_failure_with_an_underlying_error(session: aiohttp.ClientSession) -> None:
    body = envelope(delivery("failure", error={"code": "bad_request", "underlyingError": {
        "message": "This message is being sent outside the allowed window", "code": 10}}))
    (receipt,) = adapter(session).parse_webhook(JSON, body, {}).receipts
    assert receipt.error_detail == "This message is being sent outside the allowed window"


def test_several_events_in_one_call(session: aiohttp.ClientSession) -> None:
    body = envelope(delivery("channel", "e1", "m1"), delivery("user", "e2", "m1"),
                    delivery("channel", "e3", "m2"))
    receipts = adapter(session).parse_webhook(JSON, body, {}).receipts
    assert [(r.event_id, r.provider_message_id, r.status) for r in receipts] == [
        ("e1", "m1", MessageStatus.SENT), ("e2", "m1", MessageStatus.DELIVERED),
        ("e3", "m2", MessageStatus.SENT)]


def test_unknown_delivery_type_is_kept_unmapped(session: aiohttp.ClientSession) -> None:
    (receipt,) = adapter(session).parse_webhook(JSON, envelope(delivery("carrier")), {}).receipts
    assert receipt.status is None
    assert receipt.provider_status == "conversation:message:delivery:carrier"


def test_other_event_types_are_ignored(session: aiohttp.ClientSession) -> None:
    client_add = {"id": "e9", "createdAt": "2021-08-27T15:53:06.744Z", "type": "client:add",
                  "payload": {"client": TWILIO_CLIENT, "reason": "channelLinking"}}
    read = {"id": "e10", "createdAt": "2021-08-27T15:53:06.744Z", "type": "conversation:read",
            "payload": {"conversation": {"id": "c"}, "activity": {"type": "conversation:read"}}}
    events = adapter(session).parse_webhook(JSON, envelope(client_add, read), {})
    assert (events.receipts, events.inbound, events.opt_changes) == ((), (), ())


def test_a_user_reply_is_inbound(session: aiohttp.ClientSession) -> None:
    body = envelope(user_message("Thanks!", TWILIO_CLIENT))
    events = adapter(session).parse_webhook(JSON, body, {})
    (reply,) = events.inbound
    assert (reply.from_, reply.text, reply.provider_message_id) == (
        "+15145555555", "Thanks!", "5f40256af057d0000dda9bd7")
    assert not events.opt_changes
    assert not events.receipts


@pytest.mark.parametrize(("word", "opted_out"), [("STOP", True), ("stop.", True),
                                                 ("Unsubscribe", True), ("START", False)])
def test_stop_and_start_replies_are_opt_changes(
    session: aiohttp.ClientSession, word: str, opted_out: bool
) -> None:
    body = envelope(user_message(word, TWILIO_CLIENT))
    (change,) = adapter(session).parse_webhook(JSON, body, {}).opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+15145555555", opted_out, "sms")


def test_the_phone_may_come_from_the_raw_client(session: aiohttp.ClientSession) -> None:
    client = {**TWILIO_CLIENT, "externalId": "user-7", "raw": {"from": "15145550000"}}
    (reply,) = adapter(session).parse_webhook(JSON, envelope(user_message("STOP", client)),
                                              {}).inbound
    assert reply.from_ == "+15145550000"


@pytest.mark.parametrize(
    "event",
    [
        user_message("STOP"),  # no includeFullSource: no client, no phone
        user_message("STOP", {**TWILIO_CLIENT, "externalId": "psid-123", "type": "messenger"}),
        user_message("STOP", TWILIO_CLIENT, author="business"),  # our own message echoed
    ],
    ids=["no-client", "not-a-phone", "business"],
)
def test_messages_without_a_phone_or_from_us_are_ignored(
    session: aiohttp.ClientSession, event: dict[str, Any]
) -> None:
    events = adapter(session).parse_webhook(JSON, envelope(event), {})
    assert (events.inbound, events.opt_changes) == ((), ())


def test_a_non_text_user_message_is_ignored(session: aiohttp.ClientSession) -> None:
    event = user_message("x", TWILIO_CLIENT)
    event["payload"]["message"]["content"] = {"type": "image", "mediaUrl": "https://x/y.png"}
    assert adapter(session).parse_webhook(JSON, envelope(event), {}).inbound == ()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (JSON, b"{not json", "JSON"),
        (JSON, b"[]", "events"),
        (JSON, orjson.dumps({"app": {"id": APP}}), "events"),
        (JSON, orjson.dumps({"events": [1]}), "events"),
        (JSON, envelope({"id": "e", "payload": {}}), "type"),
        (JSON, envelope({"id": "e", "type": "conversation:message:delivery:user"}), "payload"),
        (JSON, envelope(delivery("user", message_id="")), "message.id"),
        (JSON, envelope({"id": "e", "type": "conversation:message", "payload": {}}),
         "payload.message"),
        ("text/plain", b"events", "content type"),
    ],
)
def test_malformed_webhooks(
    session: aiohttp.ClientSession, content_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter(session).parse_webhook(content_type, body, {})


def test_webhook_secret_in_the_x_api_key_header(session: aiohttp.ClientSession) -> None:
    sunco = adapter(session)
    secret = "8564b3e6a8b20a4bdb68b05ce9bc5936"
    assert sunco.webhook_authentic({"X-API-Key": secret}, {})
    assert sunco.webhook_authentic({"x-api-key": secret}, {})
    assert not sunco.webhook_authentic({"X-API-Key": "wrong"}, {})
    assert not sunco.webhook_authentic({"X-Webhook-Secret": secret}, {})
    assert not sunco.webhook_authentic({}, {})
    assert sunco.webhook_url("https://engine.example.com/") == (
        "https://engine.example.com/webhooks/sunco")
