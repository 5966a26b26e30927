"""ZoomConnect as the simulator plays it (family ``zoomconnect``): the seed's REST API, strictly.

* ``POST /api/rest/v1/sms/send`` and ``POST /api/rest/v1/sms/send-bulk`` with a JSON body
  (another content type is 415); ``GET /api/rest/v1/sms/send`` answers the example body, as
  ZoomConnect does; ``GET /api/rest/v1/messages/{messageId}`` and
  ``GET /api/rest/v1/account/balance``. Any other path under ``/api/rest/v1`` is a 404.
* auth: headers ``email`` and ``token``, Basic email:token, or (testing) ``?email=&token=``;
  ``require_token`` is the token (None: any). Errors are ``RestErrorDTO {code, status,
  message, developerMessage, moreInfoUrl}``: code 2 invalid mobile number, 3 empty message.
* receipts and replies: one call each, to ``webhook_url`` (with ``?secret=`` appended when
  ``webhook_secret`` is set: the older form; give the path form, ``…/webhooks/{account}/
  {secret}``, as ``webhook_url`` itself). The seed shows ZoomConnect appending its
  parameters to the URL (``report.php? &status=DELIVERED &messageId=…``) and leaves open
  how exactly, so each callback picks at random: joined with ``?``, ``&`` or ``?&``, or
  POSTed as form fields (with or without the leading ``&``).
* fates: ``delivered`` → ``DELIVERED``; ``undelivered`` → ``FAILED_REFUNDED`` or ``FAILED``
  at random; ``failed`` → ``FAILED_OPTOUT`` (ZoomConnect took the message either way). A
  report carries ``messageId``, ``status`` and ``dataField``; a reply ``from``,
  ``message``, ``messageId``, ``date``, and ``repliedToMessageId`` with the ``dataField`` of
  the last message sent to that number.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import Counter
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from yarl import URL

from engine.providers.zoomconnect import API
from engine.simulator.model import BadRequest, Post, Rejection, SendItem, SimEvent, SimMessage
from engine.simulator.routes import ProviderRoutes, json_response

_NUMBER = re.compile(r"^(\+?[1-9]\d{9,14}|0\d{9})$")
#: how a callback's parameters travel: appended after one of these, or as form fields
JOINS = ("?", "&", "?&", "form", "form&")
_EXAMPLE = {"message": "", "campaign": "", "recipientNumber": "", "dateToSend": "", "dataField": ""}


class ZoomConnectRoutes(ProviderRoutes):
    """ZoomConnect's send, bulk, message lookup and balance, with its DLRs and replies."""

    family = "zoomconnect"
    receipts_per_post = 1
    keeps_messages = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._words: dict[str, str] = {}  # message id → its final status word
        #: how many callbacks went out in each joining form (tests check all were played)
        self.joins: Counter[str] = Counter()

    def routes(self) -> list[web.RouteDef]:
        """The documented paths under the base URL's root, and a 404 for the rest."""
        return [
            web.post(f"{API}/sms/send", self._json_only(self.send_single)),
            web.get(f"{API}/sms/send", self._example),
            web.post(f"{API}/sms/send-bulk", self._json_only(self.send_bulk)),
            web.get(f"{API}/messages/{{messageId}}", self._message),
            web.get(f"{API}/account/balance", self._balance),
            web.route("*", f"{API}/{{tail:.*}}", self._not_found),
        ]

    def authorized(self, request: web.Request) -> bool:
        """``email`` + ``token`` headers, Basic email:token, or (testing) query params."""
        email, token = request.headers.get("email"), request.headers.get("token")
        if not (email and token):
            email, token = _basic(request.headers.get("Authorization", ""))
        if not (email and token):
            email, token = request.query.get("email"), request.query.get("token")
        wanted = self.settings.require_token
        return bool(email and token) and (wanted is None or token == wanted)

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """WebServiceSendSmsRequest, or WebServiceSendSmsRequests for bulk."""
        data = _json_object(body)
        if not bulk:
            return [self._item(data)]
        requests = data.get("sendSmsRequests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("1", "sendSmsRequests must be a non-empty list")
        return [self._item(r) for r in requests]

    @staticmethod
    def _item(data: Any) -> SendItem:
        if not isinstance(data, dict):
            return SendItem("", "", None, Rejection("1", "Invalid request"))
        number, text = data.get("recipientNumber"), data.get("message")
        ref = None if data.get("dataField") is None else str(data["dataField"])
        if not isinstance(number, str) or not _NUMBER.match(number):
            return SendItem(str(number), "", ref, Rejection("2", "Invalid mobile number"))
        if not isinstance(text, str) or not text.strip():
            return SendItem(number, "", ref, Rejection("3", "Message cannot be empty"))
        return SendItem(number, text, ref)

    def blocked(self, item: SendItem) -> Rejection:
        """Code 2, as ZoomConnect answers for a number it will not send to."""
        return Rejection("2", "Invalid mobile number")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """RestErrorDTO."""
        return json_response(
            {
                "code": int(code) if code.isdigit() else status,
                "status": HTTPStatus(status).name,
                "message": detail,
                "developerMessage": detail,
                "moreInfoUrl": None,
            },
            status,
        )

    def send_response(self, outcomes: Sequence[SimMessage | Rejection], bulk: bool) -> web.Response:
        """WebServiceSendSmsResponse(s); a refused single message is a 400."""
        if not bulk and isinstance(outcomes[0], Rejection):
            return self.error(400, outcomes[0].code, outcomes[0].detail)
        items = [
            {"messageId": None, "error": o.detail}
            if isinstance(o, Rejection)
            else {"messageId": o.id, "error": None}
            for o in outcomes
        ]
        return json_response({"sendSmsResponses": items} if bulk else items[0])

    def render(self, events: Sequence[SimEvent]) -> Post:
        """One DLR or reply per call, its parameters joined to the URL as chance picks."""
        (event,) = events
        assert self.settings.webhook_url is not None
        url = self.settings.webhook_url
        if self.settings.webhook_secret:
            url = str(URL(url).update_query(secret=self.settings.webhook_secret))
        if event.kind == "inbound":
            params = self._reply(event)
        else:
            assert event.message is not None
            params = {
                "status": self._word(event.message, event.kind),
                "messageId": event.message.id,
                "dataField": event.message.reference or "",
            }
        join = self.sim.rng.choice(JOINS)
        self.joins[join] += 1
        encoded = urlencode(params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if join.startswith("form"):
            return Post(url, headers, (join[4:] + encoded).encode())
        return Post(url + join + encoded, headers, b"")

    def _word(self, message: SimMessage, kind: str) -> str:
        if kind == "sent":
            return "SENT"
        if message.id not in self._words:
            self._words[message.id] = {
                "delivered": "DELIVERED",
                "failed": "FAILED_OPTOUT",
                "undelivered": self.sim.rng.choice(("FAILED_REFUNDED", "FAILED")),
            }[message.final]
        return self._words[message.id]

    def _reply(self, event: SimEvent) -> dict[str, str]:
        sender = event.extra.get("from", "")
        replied = self.sim.messages.get((self.family, event.extra.get("in_reply_to", "")))
        if replied is None:
            replied = next(
                (
                    m
                    for (family, _), m in reversed(self.sim.messages.items())
                    if family == self.family and m.to.lstrip("+") == sender.lstrip("+")
                ),
                None,
            )
        return {
            "from": sender,
            "repliedToMessageId": replied.id if replied else "",
            "messageId": event.id,
            "message": event.extra.get("text", ""),
            "date": event.at.strftime("%Y%m%d%H%M"),
            "dataField": (replied.reference or "") if replied else "",
        }

    def _json_only(self, handler: Any) -> Any:
        async def checked(request: web.Request) -> web.StreamResponse:
            if request.content_type != "application/json":
                return self.error(415, "415", "Content type must be application/json")
            response: web.StreamResponse = await handler(request)
            return response

        return checked

    async def _example(self, request: web.Request) -> web.Response:
        return json_response(_EXAMPLE)

    async def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, "404", f"No such endpoint: {request.method} {request.path}")

    async def _message(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "401", "Unauthorized")
        message = self.sim.messages.get((self.family, request.match_info["messageId"]))
        if message is None:
            return self.error(404, "404", "Message not found")
        status = message.status_at(asyncio.get_running_loop().time())
        return json_response(
            {
                "messageId": message.id,
                "messageStatus": self._word(message, status),
                "messageType": "OUTBOUND",
                "toNumber": message.to,
                "message": message.body,
                "userDataField": message.reference,
                "numberOfMessages": 1,
            }
        )

    async def _balance(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.error(401, "401", "Unauthorized")
        return json_response({"creditBalance": float(self.sim.credit)})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except ValueError as exc:
        raise BadRequest("1", "Invalid request body") from exc
    if not isinstance(data, dict):
        raise BadRequest("1", "Invalid request body")
    return data


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        email, _, token = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return email, token
