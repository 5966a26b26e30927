"""courier as the simulator plays it (family ``courier``): the seed's ``texts`` resource, strictly.

* ``POST /v1/texts/`` with a JSON:API ``texts`` document (another content type is 415):
  ``account-id``, ``number-id``, ``target`` (E.164) and ``message`` required; the optional
  ``callback-status-url``, ``callback-url`` (strings), ``callback-json`` (an object),
  ``callback-one-off`` (a boolean) and ``expected-responses`` (strings) are type-checked
  → 201 with the new text. ``GET /v1/texts/{id}/`` (404 for another account's or an
  unknown text) and ``GET /v1/texts/?account-id=…`` (required) with ``filter[target]`` and
  ``filter[number-id]``. Any other path under ``/v1/texts`` is a 404.
* ``Authorization: Bearer <token>`` (``require_token``: that one). Errors are the seed's
  ``{errors: [{code, detail, meta, source: {parameter, pointer}, status}]}``.
* status callbacks go to each text's ``callback-status-url`` (``webhook_url``, if set,
  serves texts naming none). The seed leaves their shape open, so each callback picks at
  random: a JSON:API ``texts`` document, or Twilio-style form fields (``MessageSid`` = the
  text's ``twilio-sid``, ``MessageStatus``, ``ErrorCode``, …); either with or without the
  text's ``callback-json``. Fates: ``undelivered`` and ``failed`` keep their names
  (Twilio error codes 30003 and 30005).
* ``POST /sim/inbound/courier {from, text}``: the reply goes to the ``callback-url`` of the
  last text sent to that number, if the text is one of its ``expected-responses`` (any,
  when it names none); as a JSON:API document shaped like the seed's
  ``text-receive-logs``, or as Twilio-style form fields (``From``, ``Body``, ``MessageSid``),
  at random. With no such text it goes to ``webhook_url``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from yarl import URL

from engine.providers.courier import TEXTS
from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_REQUIRED = ("account-id", "number-id", "target", "message")
_OPTIONAL: dict[str, tuple[type, str]] = {
    "callback-status-url": (str, "a string"),
    "callback-url": (str, "a string"),
    "callback-json": (dict, "an object"),
    "callback-one-off": (bool, "a boolean"),
    "organization-id": (str, "a string"),
    "expected-responses": (list, "a list of strings"),
}
_SIM_ERRORS = {
    "undelivered": ("30003", "Unreachable destination handset"),
    "failed": ("30005", "Unknown destination handset"),
}
#: the shared machinery's error codes, in Carium's PascalCase (guessed names)
_ERROR_CODES = {
    "unauthorized": "Unauthorized",
    "rate_limited": "TooManyRequests",
    "internal_error": "InternalServerError",
}
_FROM = "+15550100000"


@dataclass(slots=True)
class _Text:
    """What the simulator keeps of a text beyond the shared SimMessage."""

    account_id: str
    number_id: str
    callback_url: str | None
    expected: tuple[str, ...]
    twilio_sid: str
    created: datetime


class CourierRoutes(ProviderRoutes):
    """courier's texts collection, with status callbacks and replies."""

    family = "courier"
    callback_per_request = True
    keeps_messages = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.texts: dict[str, _Text] = {}
        #: lookups served, by kind (``one``, ``list``), for tests of the polling fallback
        self.lookups: dict[str, int] = {"one": 0, "list": 0}

    def routes(self) -> list[web.RouteDef]:
        """The texts collection and one text; a 404 for the rest under ``/v1/texts``."""
        return [
            web.post(TEXTS, self._create),
            web.get(TEXTS, self._list),
            web.get(f"{TEXTS}{{id}}/", self._one),
            web.route("*", "/v1/texts{tail:.*}", self._not_found),
        ]

    def authorized(self, request: web.Request) -> bool:
        """``Authorization: Bearer <token>`` (any, or the required one)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        wanted = self.settings.require_token
        return scheme.lower() == "bearer" and bool(token) and wanted in (None, token)

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """A JSON:API ``texts`` document."""
        attributes = _attributes(_document(body))
        callback, echo = attributes.get("callback-status-url"), attributes.get("callback-json")
        ref = None if echo is None else orjson.dumps(echo).decode()
        target = attributes["target"]
        if not _E164.match(target):
            return [
                SendItem(
                    target,
                    "",
                    ref,
                    Rejection("InvalidPhoneNumber", "/data/attributes/target: not an E.164 number"),
                    callback,
                )
            ]
        return [SendItem(target, attributes["message"], ref, None, callback)]

    def blocked(self, item: SendItem) -> Rejection:
        """``BlockedTarget`` [G]."""
        return Rejection("BlockedTarget", "the number does not accept messages")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """The seed's ``{errors: [{code, detail, meta, source, status}]}``."""
        pointer, _, text = detail.partition(": ") if detail.startswith("/") else ("", "", detail)
        source = {"pointer": pointer} if pointer else {}
        if detail.startswith("?"):
            parameter, _, text = detail[1:].partition(": ")
            source = {"parameter": parameter}
        return json_response(
            {
                "errors": [
                    {
                        "code": _ERROR_CODES.get(code, code),
                        "detail": text,
                        "meta": {},
                        "source": source,
                        "status": status,
                    }
                ]
            },
            status,
        )

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """201 with the new text; a refused text is a 400."""
        (outcome,) = outcomes
        if isinstance(outcome, Rejection):
            return self.error(400, outcome.code, outcome.detail)
        return json_response({"data": self._resource(outcome, "accepted"), "meta": {}}, 201)

    def new_id(self, serial: int) -> str:
        """A UUID, as courier's ids are."""
        return str(uuid.UUID(int=serial))

    def render(self, events: Sequence[SimEvent]) -> Post | None:
        """One callback per call, in a shape chance picks."""
        (event,) = events
        if event.kind == "inbound":
            return self._reply(event)
        message = event.message
        assert message is not None
        url = message.callback or self._fallback_url()
        if url is None:
            return None
        echo = self.sim.rng.random() < 0.5
        if self.sim.rng.random() < 0.5:
            resource = self._resource(message, event.kind, event.at)
            if echo and message.reference is not None:
                resource["attributes"]["callback-json"] = orjson.loads(message.reference)
            return Post(
                url,
                {"Content-Type": "application/json"},
                orjson.dumps({"data": resource, "meta": {}}),
            )
        text = self.texts.get(message.id)
        code, detail = _SIM_ERRORS.get(event.kind, ("", ""))
        fields = {
            "MessageSid": text.twilio_sid if text else message.id,
            "SmsSid": text.twilio_sid if text else message.id,
            "AccountSid": "AC" + "0" * 32,
            "From": _FROM,
            "To": message.to,
            "MessageStatus": event.kind,
            "SmsStatus": event.kind,
            "ApiVersion": "2010-04-01",
        }
        if code:
            fields.update(ErrorCode=code, ErrorMessage=detail)
        if echo and message.reference is not None:
            fields["callback-json"] = message.reference
        return Post(
            url, {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(fields).encode()
        )

    def _reply(self, event: SimEvent) -> Post | None:
        sender, body = event.extra.get("from", ""), event.extra.get("text", "")
        found = next(
            (
                self.texts[m.id]
                for (family, _), m in reversed(self.sim.messages.items())
                if family == self.family and m.to == sender and m.id in self.texts
            ),
            None,
        )
        if found is not None and found.callback_url:
            if found.expected and body.strip().upper() not in found.expected:
                return None
            url: str | None = found.callback_url
        else:
            url = self._fallback_url()
        if url is None:
            return None
        sid = "SM" + uuid.uuid4().hex
        if self.sim.rng.random() < 0.5:
            doc = {
                "data": {
                    "id": event.id,
                    "type": "text-receive-logs",
                    "attributes": {
                        "created-at": event.at.isoformat(),
                        "message": body,
                        "sender": sender,
                        "sid": sid,
                        "to": _FROM,
                    },
                },
                "meta": {},
            }
            return Post(url, {"Content-Type": "application/json"}, orjson.dumps(doc))
        fields = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": sender,
            "To": _FROM,
            "Body": body,
            "NumMedia": "0",
        }
        return Post(
            url, {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(fields).encode()
        )

    def _fallback_url(self) -> str | None:
        if self.settings.webhook_url is None:
            return None
        url = URL(self.settings.webhook_url)
        if self.settings.webhook_secret:
            url = url.update_query(secret=self.settings.webhook_secret)
        return str(url)

    def _resource(
        self, message: SimMessage, status: str, at: datetime | None = None
    ) -> dict[str, Any]:
        text = self.texts.get(message.id)
        created = text.created if text else datetime.now(UTC)
        stamp = (at or created).astimezone(UTC).isoformat()
        return {
            "id": message.id,
            "type": "texts",
            "attributes": {
                "status": status,
                "target": message.to,
                "message": message.body,
                "from": _FROM,
                "error": _SIM_ERRORS.get(status, (None, None))[1],
                "callback-status-url": message.callback,
                "callback-url": text.callback_url if text else None,
                "twilio-sid": text.twilio_sid if text else None,
                "created-at": created.isoformat(),
                "created-by": str(uuid.UUID(int=1)),
                "last-modified-at": stamp,
            },
        }

    async def _create(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return self.error(415, "UnsupportedMediaType", "the body must be application/json")
        response = await self.send_single(request)
        if response.status == 201:  # keep what the shared SimMessage does not hold
            assert isinstance(response.body, bytes)
            text_id = orjson.loads(response.body)["data"]["id"]
            attributes = _attributes(_document(await request.read()))
            self.texts[text_id] = _Text(
                attributes["account-id"],
                attributes["number-id"],
                attributes.get("callback-url"),
                tuple(str(r).strip().upper() for r in attributes.get("expected-responses") or ()),
                "SM" + uuid.uuid4().hex,
                datetime.now(UTC),
            )
            response = json_response(
                {
                    "data": self._resource(self.sim.messages[(self.family, text_id)], "accepted"),
                    "meta": {},
                },
                201,
            )
        return response

    async def _one(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "unauthorized", "missing or wrong credentials")
        self.lookups["one"] += 1
        message = self.sim.messages.get((self.family, request.match_info["id"]))
        if message is None:
            return self.error(404, "NotFound", "no such text")
        now = asyncio.get_running_loop().time()
        return json_response({"data": self._resource(message, message.status_at(now)), "meta": {}})

    async def _list(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "unauthorized", "missing or wrong credentials")
        account = request.query.get("account-id")
        if not account:
            return self.error(400, "ValidationError", "?account-id: required")
        self.lookups["list"] += 1
        target, number = request.query.get("filter[target]"), request.query.get("filter[number-id]")
        now = asyncio.get_running_loop().time()
        found = [
            self._resource(m, m.status_at(now))
            for (family, _), m in self.sim.messages.items()
            if family == self.family
            and (text := self.texts.get(m.id)) is not None
            and text.account_id == account
            and target in (None, m.to)
            and number in (None, text.number_id)
        ]
        limit = int(request.query.get("page[limit]", "100"))
        offset = int(request.query.get("page[offset]", "0"))
        return json_response({"data": found[offset : offset + limit], "meta": {}})

    async def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, "NotFound", f"no route {request.method} {request.path}")


def _document(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("InvalidJson", "the body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("ValidationError", "/: expected a JSON:API document")
    return data


def _attributes(data: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a ``texts`` document, every documented one checked."""
    resource = data.get("data")
    if not isinstance(resource, dict) or resource.get("type") != "texts":
        raise BadRequest("ValidationError", "/data/type: expected texts")
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        raise BadRequest("ValidationError", "/data/attributes: required")
    for name in _REQUIRED:
        if not isinstance(attributes.get(name), str) or not attributes[name]:
            raise BadRequest("ValidationError", f"/data/attributes/{name}: required")
    for name, (kind, wanted) in _OPTIONAL.items():
        value = attributes.get(name)
        if value is not None and not isinstance(value, kind):
            raise BadRequest("ValidationError", f"/data/attributes/{name}: {wanted}")
    responses = attributes.get("expected-responses") or []
    if not all(isinstance(r, str) for r in responses):
        raise BadRequest("ValidationError", "/data/attributes/expected-responses: strings")
    return attributes
