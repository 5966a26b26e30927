"""The Zingle adapter against mocked HTTP: requests as documented, errors, polling, webhook."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import CallbackResult
from pydantic import ValidationError
from yarl import URL

from engine.providers import ACCOUNT_TYPES
from engine.providers.base import MalformedWebhook, Outbound, Outcome, SendResult
from engine.providers.zingle import (
    DEFAULT_NAMESPACE,
    ERROR_CODES,
    ZingleAccount,
    ZingleAdapter,
    message_uuid,
)
from engine.status import MessageStatus
from tests.aioresponses_compat import CompatResponse
from tests.unit.adapter_case import (
    AdapterCase,
    MakeAccount,
    MakeAdapter,
    MakeMessage,
    Sent,
    refused,
)

BASE = "https://zingle.test"
SERVICE = "1d06e84f-8152-4de7-983d-a2d88b73734a"
CHANNEL_TYPE = "0e3d71ee-9518-4b9b-b95a-dea251829887"
SEND = f"{BASE}/v1/services/{SERVICE}/messages"
OK = {"text": "OK", "status_code": 200, "description": None}


CASE = AdapterCase(
    "zingle-main",
    ZingleAccount,
    ZingleAdapter,
    {
        "type": "zingle",
        "username": "ops@example.com",
        "password": "pw-123",
        "service_id": SERVICE,
        "channel_type_id": CHANNEL_TYPE,
        "base_url": BASE,
        "webhook_secret": "s3cret",
    },
    to="+18585551214",
)


def error_body(status: int, code: int | None, description: str | None = None) -> dict[str, Any]:
    return {
        "status": {
            "text": "Bad Request",
            "status_code": status,
            "description": description,
            "error_code": code,
        }
    }


# --- account -------------------------------------------------------------------------------


def test_registered_under_its_type() -> None:
    assert ACCOUNT_TYPES["zingle"] is ZingleAccount
    assert ZingleAccount.default_base_url == "https://api.zingle.me"


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        ({"username": None, "password": None}, "username and password .* or jwt"),
        ({"password": None}, "together"),
        ({"username": None}, "together"),
        (
            {"username": None, "password": None, "jwt": "eyJ.x.y", "auth": "basic"},
            "auth: basic needs",
        ),
    ],
    ids=["neither", "no-password", "no-username", "basic-without-password"],
)
def test_credentials_must_be_usable(
    credentials: dict[str, Any], error: str, account: MakeAccount
) -> None:
    with pytest.raises(ValidationError, match=error):
        account(**credentials)


@pytest.mark.parametrize(
    ("credentials", "bearer", "renewable"),
    [
        ({}, False, False),
        ({"auth": "jwt"}, True, True),
        ({"jwt": "eyJ.x.y"}, True, True),
        ({"username": None, "password": None, "jwt": "eyJ.x.y"}, True, False),
        ({"jwt": "eyJ.x.y", "auth": "basic"}, False, False),
    ],
    ids=["basic", "jwt-from-the-api", "jwt-renewed", "jwt-static", "basic-chosen"],
)
def test_auth_modes(
    credentials: dict[str, Any], bearer: bool, renewable: bool, account: MakeAccount
) -> None:
    made = account(**credentials)
    assert (made.bearer, made.renewable) == (bearer, renewable)


def test_service_and_channel_type_are_required() -> None:
    with pytest.raises(ValidationError, match="channel_type_id"):
        ZingleAccount.model_validate({"type": "zingle", "jwt": "t", "service_id": SERVICE})


# --- sending ---------------------------------------------------------------------------------


async def test_send_request_as_documented(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(
        SEND,
        payload={"status": OK, "result": {"message_ids": ["739094d3-191e-4c49-b208-a9be816c39b0"]}},
    )
    results = await adapter(sender="+17605554396").send([message(42)])
    assert results == [SendResult(Outcome.ACCEPTED, "739094d3-191e-4c49-b208-a9be816c39b0")]
    (call,) = sent("POST", SEND)
    assert orjson.loads(call.kwargs["data"]) == {
        "sender_type": "service",
        "sender": {"id": SERVICE, "channel_value": "+17605554396"},
        "recipient_type": "contact",
        "recipients": [{"channel_value": "+18585551214"}],
        "channel_type_ids": [CHANNEL_TYPE],
        "body": "Hello",
        "uuid": str(uuid.uuid5(DEFAULT_NAMESPACE, "42")),
    }
    headers = call.kwargs["headers"]
    expected = base64.b64encode(b"ops@example.com:pw-123").decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"


async def test_bearer_jwt_and_the_message_sender(
    http: Any, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, payload={"status": OK, "result": {"message_ids": ["m-1"]}})
    zingle = adapter(username=None, password=None, jwt="eyJhbGc.eyJzdWI.sig")
    await zingle.send([Outbound(7, "+18585551214", "Hi", sender="+17605550000")])
    (call,) = sent("POST", SEND)
    assert call.kwargs["headers"]["Authorization"] == "Bearer eyJhbGc.eyJzdWI.sig"
    assert orjson.loads(call.kwargs["data"])["sender"] == {
        "id": SERVICE,
        "channel_value": "+17605550000",
    }


async def test_without_a_sender_only_the_service_id_is_sent(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, payload={"status": OK, "result": {"message_ids": ["m-1"]}})
    await adapter().send([message()])
    assert orjson.loads(sent("POST", SEND)[0].kwargs["data"])["sender"] == {"id": SERVICE}


def test_the_uuid_is_deterministic_per_message_and_namespace() -> None:
    assert message_uuid(DEFAULT_NAMESPACE, 42) == message_uuid(DEFAULT_NAMESPACE, 42)
    assert message_uuid(DEFAULT_NAMESPACE, 42) != message_uuid(DEFAULT_NAMESPACE, 43)
    other = uuid.UUID("11111111-2222-3333-4444-555555555555")
    assert message_uuid(other, 42) != message_uuid(DEFAULT_NAMESPACE, 42)
    assert uuid.UUID(message_uuid(DEFAULT_NAMESPACE, 42)).version == 5


async def test_a_retried_message_carries_the_same_uuid(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, exception=TimeoutError())
    http.post(SEND, payload={"status": OK, "result": {"message_ids": ["m-1"]}})
    zingle = adapter(uuid_namespace="11111111-2222-3333-4444-555555555555")
    first = await zingle.send([message(9)])
    second = await zingle.send([message(9)])
    assert (first[0].outcome, second[0].outcome) == (Outcome.RETRY, Outcome.ACCEPTED)
    keys = {orjson.loads(c.kwargs["data"])["uuid"] for c in sent("POST", SEND)}
    assert keys == {str(uuid.uuid5(uuid.UUID("11111111-2222-3333-4444-555555555555"), "9"))}


@pytest.mark.parametrize(
    "payload",
    [{"status": OK, "result": {"message_ids": []}}, {"status": OK}, None],
    ids=["no-ids", "no-result", "not-json"],
)
async def test_an_unreadable_200_is_retry_because_sends_are_idempotent(
    http: Any, payload: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    if payload is None:
        http.post(SEND, body=b"<html>ok</html>")
    else:
        http.post(SEND, payload=payload)
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "bad_response")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, 2601),
        (403, 2602),
        (400, 2604),
        (400, 2605),
        (400, 2606),
        (404, 2800),
        (400, 3602),
        (400, 3603),
        (400, 3604),
        (400, 3605),
        (400, 3606),
        (400, 3607),
        (400, 3608),
        (400, 3609),
        (400, 3610),
        (400, 3611),
        (400, 3613),
        (400, 3617),
        (400, 3618),
        (400, 3623),
        (400, 3625),
        (400, 3626),
        (400, 3632),
        (400, 3637),
        (400, 3638),
        (403, 3108),
    ],
)
async def test_documented_errors_are_rejections(
    http: Any, status: int, code: int, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=status, payload=error_body(status, code, f"problem {code}"))
    (result,) = await adapter().send([message()])
    # 2601/2602 are the account's problem, not the message's (issue 17 item 1)
    outcome = Outcome.ACCOUNT if code in (2601, 2602) else Outcome.REJECTED
    assert (result.outcome, result.error_code) == (outcome, str(code))
    assert result.error_detail == f"problem {code}"


def test_every_documented_code_is_tested() -> None:
    tested = {
        2601,
        2602,
        2604,
        2605,
        2606,
        2800,
        3602,
        3603,
        3604,
        3605,
        3606,
        3607,
        3608,
        3609,
        3610,
        3611,
        3613,
        3617,
        3618,
        3623,
        3625,
        3626,
        3632,
        3637,
        3638,
        3108,
    }
    assert set(ERROR_CODES) == tested | {2600}


async def test_an_error_without_a_description_uses_the_table(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=400, payload=error_body(400, "2606"))
    (result,) = await adapter().send([message()])
    assert (result.error_code, result.error_detail) == ("2606", "invalid phone number format")


@pytest.mark.parametrize(("status", "body"), [(401, b""), (405, b"Method Not Allowed")])
async def test_errors_without_a_zingle_body_use_the_http_status(
    http: Any, status: int, body: bytes, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=status, body=body)
    (result,) = await adapter().send([message()])
    outcome = Outcome.ACCOUNT if status == 401 else Outcome.REJECTED
    assert (result.outcome, result.error_code) == (outcome, str(status))


async def test_server_error_2600_in_a_4xx_is_retry(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=400, payload=error_body(400, 2600, "Server error"))
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "2600")


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retry_because_sends_are_idempotent(
    http: Any, status: int, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=status, payload=error_body(status, 2600, "Server error"))
    zingle = adapter()
    assert zingle.idempotent_sends
    (result,) = await zingle.send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, str(status))


async def test_429_is_retry_after_the_given_seconds(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=429, headers={"Retry-After": "12"})
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 12)


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connection_lost"),
        (aiohttp.ConnectionTimeoutError("connect timeout"), "connect_error"),
        (refused("zingle.test"), "connect_error"),
    ],
    ids=["timeout", "dropped", "connect-timeout", "refused"],
)
async def test_transport_failures_are_all_retry(
    http: Any, exception: Exception, code: str, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, exception=exception)
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, code)


# --- polling ---------------------------------------------------------------------------------


def lookup(message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "status": OK,
        "result": {
            "id": message_id,
            "body": "Hello",
            "created_at": 1442249019,
            "communication_direction": "outbound",
            "sender_type": "service",
            "recipient_type": "contact",
            "read_at": None,
            **fields,
        },
    }


async def test_poll_maps_statuses(http: Any, adapter: MakeAdapter, sent: Sent) -> None:
    http.get(f"{SEND}/m-sent", payload=lookup("m-sent", executed_at=1442249020, statuses=[]))
    http.get(
        f"{SEND}/m-failed",
        payload=lookup(
            "m-failed",
            executed_at=1442249020,
            statuses=[
                {"type": "failed", "description": "Carrier rejected", "created_at": 1442249030}
            ],
        ),
    )
    http.get(f"{SEND}/m-queued", payload=lookup("m-queued", executed_at=None))
    http.get(f"{SEND}/m-delayed", payload=lookup("m-delayed", is_delayed=True, executed_at=None))
    http.get(f"{SEND}/m-gone", status=404, payload=error_body(404, 3600, "Message not found"))
    zingle = adapter()
    assert zingle.supports_polling
    found = await zingle.poll(["m-sent", "m-failed", "m-queued", "m-delayed", "m-gone"])
    by_id = {r.provider_message_id: r for r in found}
    assert set(by_id) == {"m-sent", "m-failed", "m-queued", "m-delayed"}
    ok, failed = by_id["m-sent"], by_id["m-failed"]
    assert (ok.status, ok.provider_status) == (MessageStatus.SENT, "executed")
    assert ok.occurred_at == datetime.fromtimestamp(1442249020, UTC)
    assert (failed.status, failed.error_code, failed.error_detail) == (
        MessageStatus.UNDELIVERED,
        "failed",
        "Carrier rejected",
    )
    assert failed.occurred_at == datetime.fromtimestamp(1442249030, UTC)
    assert (by_id["m-queued"].status, by_id["m-queued"].provider_status) == (
        MessageStatus.SENT,
        "queued",
    )
    assert by_id["m-delayed"].provider_status == "delayed"
    assert all(r.message_id is None for r in found)
    (call,) = sent("GET", f"{SEND}/m-sent")
    assert call.kwargs["headers"]["Authorization"].startswith("Basic ")


async def test_poll_never_reports_delivered(http: Any, adapter: MakeAdapter) -> None:
    """Zingle has no delivered signal: ``read_at`` on an outbound message is not read."""
    http.get(f"{SEND}/m-1", payload=lookup("m-1", executed_at=1, read_at=2, statuses=[]))
    (receipt,) = await adapter().poll(["m-1"])
    assert receipt.status is MessageStatus.SENT


async def test_poll_keeps_an_unknown_status_type(http: Any, adapter: MakeAdapter) -> None:
    http.get(
        f"{SEND}/m-1",
        payload=lookup(
            "m-1",
            executed_at=1,
            statuses=[{"type": "carrier_accepted", "description": None, "created_at": 2}],
        ),
    )
    (receipt,) = await adapter().poll(["m-1"])
    assert (receipt.status, receipt.provider_status) == (MessageStatus.SENT, "carrier_accepted")


async def test_poll_leaves_out_unreadable_and_unreachable(http: Any, adapter: MakeAdapter) -> None:
    http.get(f"{SEND}/a", body=b"not json")
    http.get(f"{SEND}/b", status=500)
    http.get(f"{SEND}/c", exception=aiohttp.ServerDisconnectedError())
    assert await adapter().poll(["a", "b", "c"]) == []


async def test_poll_runs_concurrently_up_to_the_account_limit(
    http: Any, adapter: MakeAdapter
) -> None:
    flight = {"now": 0, "most": 0}

    async def slow(url: URL, **kwargs: Any) -> CallbackResult:
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])
        await asyncio.sleep(0.02)
        flight["now"] -= 1
        return CallbackResult(
            payload=lookup(url.name, executed_at=1), response_class=CompatResponse
        )

    for n in range(6):
        http.get(f"{SEND}/m{n}", callback=slow)
    found = await adapter(concurrency=2).poll([f"m{n}" for n in range(6)])
    assert sorted(r.provider_message_id or "" for r in found) == [f"m{n}" for n in range(6)]
    assert flight["most"] == 2


# --- the opt-in/out webhook -----------------------------------------------------------------

SAMPLE = {
    "action": "block",
    "direction": "outbound",
    "service_id": "fbb44d67-7437-464d-b249-17e9f918dc8e",
    "service_name": "Foo Hotel",
    "contact_id": "f6882aa2-afaf-4230-ae0a-cde79e78afb4",
    "contact_external_id": "9879a777",
    "contact_phone": "+14065551212",
    "service_phone": "+17605558585",
    "is_auto_blocked": True,
}
JSON = "application/json"


def test_seed_sample_block_is_an_opt_out(adapter: MakeAdapter) -> None:
    events = adapter().parse_webhook(JSON, orjson.dumps(SAMPLE), {})
    (change,) = events.opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+14065551212", True, "sms")
    assert change.raw == SAMPLE
    assert not events.receipts
    assert not events.inbound


def test_unblock_is_an_opt_in(adapter: MakeAdapter) -> None:
    body = orjson.dumps({**SAMPLE, "action": "unblock", "contact_phone": "14065551212"})
    (change,) = adapter().parse_webhook(JSON, body, {}).opt_changes
    assert (change.phone, change.opted_out) == ("+14065551212", False)


def test_an_inbound_block_is_not_an_opt_out(adapter: MakeAdapter) -> None:
    body = orjson.dumps({**SAMPLE, "direction": "inbound"})
    assert adapter().parse_webhook(JSON, body, {}).opt_changes == ()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (JSON, b"{not json", "JSON"),
        (JSON, b"[1]", "object"),
        (JSON, b"", "action"),
        (JSON, orjson.dumps({**SAMPLE, "action": "mute"}), "action"),
        (JSON, orjson.dumps({**SAMPLE, "direction": None}), "direction"),
        (JSON, orjson.dumps({**SAMPLE, "contact_phone": ""}), "contact_phone"),
        ("text/xml", b"<x/>", "content type"),
    ],
)
def test_malformed_webhooks(
    content_type: str, body: bytes, reason: str, adapter: MakeAdapter
) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter().parse_webhook(content_type, body, {})


def test_webhook_secret_in_a_header(adapter: MakeAdapter) -> None:
    zingle = adapter()
    assert zingle.webhook_authentic({"X-Webhook-Secret": "s3cret"}, {})
    assert zingle.webhook_authentic({"x-webhook-secret": "s3cret"}, {})
    assert not zingle.webhook_authentic({"X-Webhook-Secret": "wrong"}, {})
    assert not zingle.webhook_authentic({}, {})
    assert not zingle.webhook_authentic({}, {"X-Webhook-Secret": "s3cret"})
    assert zingle.webhook_url("https://engine.example.com") == (
        "https://engine.example.com/webhooks/zingle-main"
    )


# --- the seed's own examples, verbatim -------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zingle"


def test_the_seeds_sample_payload_is_an_opt_out(adapter: MakeAdapter) -> None:
    body = (FIXTURES / "opt_in_sample_payload.json").read_bytes()
    (change,) = adapter().parse_webhook(JSON, body, {}).opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+14065551212", True, "sms")
    assert change.raw == orjson.loads(body)


def test_the_seeds_schema_names_every_field_the_sample_has() -> None:
    schema = orjson.loads((FIXTURES / "opt_in_schema.json").read_bytes())
    sample = orjson.loads((FIXTURES / "opt_in_sample_payload.json").read_bytes())
    assert set(sample) <= set(schema["properties"])
    assert schema["properties"]["action"]["enum"] == ["block", "unblock"]
    assert schema["properties"]["direction"]["enum"] == ["inbound", "outbound"]


@pytest.mark.parametrize(
    ("contact_phone", "service_phone", "e164"),
    [
        ("406-555-1212", "+17605558585", "+14065551212"),
        ("(406) 555-1212", "+17605558585", "+14065551212"),
        ("+1 406 555 1212", None, "+14065551212"),
        ("082 555 1234", "+27215551234", "+27825551234"),
    ],
)
def test_a_formatted_contact_phone_is_read_in_the_services_country(
    contact_phone: str, service_phone: str | None, e164: str, adapter: MakeAdapter
) -> None:
    body = orjson.dumps({**SAMPLE, "contact_phone": contact_phone, "service_phone": service_phone})
    (change,) = adapter().parse_webhook(JSON, body, {}).opt_changes
    assert change.phone == e164


# --- the failure vocabulary: one row each ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status", "word", "code"),
    [
        ({"executed_at": 1442249020, "statuses": []}, MessageStatus.SENT, "executed", None),
        ({"executed_at": None}, MessageStatus.SENT, "queued", None),
        (
            {
                "executed_at": 1,
                "statuses": [
                    {"type": "failed", "description": "Carrier rejected", "created_at": 2}
                ],
            },
            MessageStatus.UNDELIVERED,
            "failed",
            "failed",
        ),
        (
            {
                "executed_at": 1,
                "statuses": [{"type": "undelivered", "description": "absent", "created_at": 2}],
            },
            MessageStatus.UNDELIVERED,
            "undelivered",
            "undelivered",
        ),
        (
            {"executed_at": 1, "statuses": [{"type": "delivered", "created_at": 2}]},
            MessageStatus.DELIVERED,
            "delivered",
            None,
        ),
    ],
    ids=["executed-sent", "queued-sent", "failed-undelivered", "undelivered", "delivered"],
)
async def test_polled_status_rows(
    http: Any,
    fields: dict[str, Any],
    status: MessageStatus,
    word: str,
    code: str | None,
    adapter: MakeAdapter,
) -> None:
    http.get(f"{SEND}/m-1", payload=lookup("m-1", **fields))
    (receipt,) = await adapter().poll(["m-1"])
    assert (receipt.status, receipt.provider_status, receipt.error_code) == (status, word, code)


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, 3613, Outcome.REJECTED),
        (400, 2606, Outcome.REJECTED),
        (400, 2600, Outcome.RETRY),
        (401, 2601, Outcome.ACCOUNT),
    ],
    ids=["refused-3613", "refused-2606", "server-error-retry", "auth-2601"],
)
async def test_send_refusals_are_failed_not_undelivered(
    http: Any, status: int, code: int, outcome: Outcome, message: MakeMessage, adapter: MakeAdapter
) -> None:
    """A refusal at send is the dispatcher's ``failed`` (or a retry), never ``undelivered``."""
    http.post(SEND, status=status, payload=error_body(status, code, "no"))
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (outcome, str(code))


async def test_iso_8601_dates_are_read_as_the_seed_says(http: Any, adapter: MakeAdapter) -> None:
    http.get(f"{SEND}/m-1", payload=lookup("m-1", executed_at="2015-09-14T16:43:40Z", statuses=[]))
    http.get(
        f"{SEND}/m-2",
        payload=lookup(
            "m-2",
            executed_at=1,
            statuses=[
                {"type": "failed", "description": "x", "created_at": "2015-09-14T16:43:50+00:00"}
            ],
        ),
    )
    found = {r.provider_message_id: r for r in await adapter().poll(["m-1", "m-2"])}
    assert found["m-1"].occurred_at == datetime(2015, 9, 14, 16, 43, 40, tzinfo=UTC)
    assert found["m-2"].occurred_at == datetime(2015, 9, 14, 16, 43, 50, tzinfo=UTC)


# --- JWTs from the JWT API ----------------------------------------------------------------------

JWT_API = f"{BASE}/v1/auth/jwt"


def a_jwt(expires_in: float, subject: str = "ops") -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    exp = datetime.now(UTC).timestamp() + expires_in
    return f"{part({'alg': 'HS256'})}.{part({'sub': subject, 'exp': exp})}.sig"


def accepted(http: Any, times: int = 1) -> None:
    for _ in range(times):
        http.post(SEND, payload={"status": OK, "result": {"message_ids": ["m-1"]}})


def bearers(sent: Sent) -> list[str]:
    return [c.kwargs["headers"]["Authorization"] for c in sent("POST", SEND)]


@pytest.mark.parametrize(
    "answer",
    [
        lambda t: {"status": OK, "result": {"jwt": t, "expires_in": 3600}},
        lambda t: {"status": OK, "result": {"token": t, "expires_at": "2999-01-01T00:00:00Z"}},
        lambda t: {"jwt": t},
        lambda t: {"access_token": t, "expires_in": 3600},
    ],
    ids=["result-jwt-expires_in", "result-token-expires_at", "top-level-claim", "access_token"],
)
async def test_a_jwt_is_obtained_with_basic_credentials_then_used(
    http: Any, answer: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    token = a_jwt(3600)
    http.get(JWT_API, payload=answer(token))
    accepted(http, 2)
    zingle = adapter(auth="jwt")
    await zingle.send([message(1)])
    await zingle.send([message(2)])
    (obtain,) = sent("GET", JWT_API)
    expected = base64.b64encode(b"ops@example.com:pw-123").decode()
    assert obtain.kwargs["headers"]["Authorization"] == f"Basic {expected}"
    assert bearers(sent) == [f"Bearer {token}"] * 2  # obtained once, used twice
    assert zingle.jwts_obtained == 1


async def test_a_jwt_is_renewed_before_it_expires(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    """Once 80% of its lifetime has passed, the next request renews it first."""
    old, new = a_jwt(0.05), a_jwt(3600)
    http.get(JWT_API, payload={"result": {"jwt": new}})
    accepted(http)
    zingle = adapter(jwt=old)  # the configured JWT, with credentials to renew it
    await asyncio.sleep(0.05)
    await zingle.send([message()])
    assert bearers(sent) == [f"Bearer {new}"]


async def test_a_401_renews_the_jwt_and_retries_once(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    revoked, new = a_jwt(3600), a_jwt(3600, "again")
    http.post(SEND, status=401, payload=error_body(401, 2601, "Authentication failed"))
    http.get(JWT_API, payload={"result": {"jwt": new}})
    accepted(http)
    zingle = adapter(jwt=revoked)
    (result,) = await zingle.send([message()])
    assert result.outcome is Outcome.ACCEPTED
    assert bearers(sent) == [f"Bearer {revoked}", f"Bearer {new}"]


async def test_wrong_credentials_at_the_jwt_api_are_zingles_401(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.get(JWT_API, status=401, payload=error_body(401, 2601, "Authentication failed"))
    (result,) = await adapter(auth="jwt").send([message()])
    assert (result.outcome, result.error_code) == (Outcome.ACCOUNT, "2601")
    assert sent("POST", SEND) == []  # nothing was sent


@pytest.mark.parametrize(
    "failure",
    [
        {"exception": aiohttp.ServerDisconnectedError()},
        {"status": 503},
        {"payload": {"result": {}}},
    ],
    ids=["unreachable", "503", "no-token"],
)
async def test_a_jwt_api_failure_is_retry(
    http: Any, failure: dict[str, Any], message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.get(JWT_API, **failure)
    (result,) = await adapter(auth="jwt").send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "jwt_unavailable")


async def test_a_static_jwt_is_never_renewed(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, status=401, payload=error_body(401, 2601, "Authentication failed"))
    zingle = adapter(username=None, password=None, jwt=a_jwt(-10))
    (result,) = await zingle.send([message()])
    assert (result.outcome, result.error_code) == (Outcome.ACCOUNT, "2601")
    assert sent("GET", JWT_API) == []


async def test_concurrent_requests_renew_once(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.get(JWT_API, payload={"result": {"jwt": a_jwt(3600)}})
    accepted(http, 5)
    zingle = adapter(auth="jwt")
    await asyncio.gather(*(zingle.send([message(n)]) for n in range(5)))
    assert zingle.jwts_obtained == 1
    assert len(sent("GET", JWT_API)) == 1
