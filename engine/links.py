"""Tracked short links: finding URLs in a rendered message and shortening them. Pure.

With ``links.track: true`` every ``http://`` or ``https://`` URL of a rendered body is
replaced by ``{base_url}/l/{code}``; the code leads (``GET /l/{code}``, see
:mod:`engine.link_redirect`) to the original URL with the campaign's UTM parameters.

What counts as a URL (choices the issue left open, documented in docs/marketers.md):

- it starts with ``http://`` or ``https://`` (any case) that does not follow a letter, digit
  or ``_`` (so ``xhttps://a.b`` inside a word is left alone), and runs to the next space;
- trailing punctuation is not part of it: ``.,;:!?'"`` and a closing ``)``, ``]`` or ``}``
  without its opening partner in the URL are left after the short link;
- the same URL twice in one message gets two codes (each link is counted on its own).

Codes are :data:`CODE_LENGTH` base62 characters from the operating system's CSPRNG
(:class:`random.SystemRandom`): 62^8 is about 2x10^14 codes, so a code cannot be guessed
from another. They are unique per message and link; a collision with a code already stored
is caught by the primary key and the batch is written again with fresh codes
(:func:`rekey`). While a run's rows are computed, each link holds a placeholder code of the
same length (:func:`placeholder`), so the encoding, segments and cost computed once per
distinct rendering are those of the real message; :func:`fill` swaps in the real codes.

UTM values are templates, rendered once per run and variant in the template sandbox with
``campaign`` (its name), ``variant`` and the campaign's ``vars`` (not the contact's
fields: an analytics tool should not receive personal data through a link).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from engine.errors import EngineError
from engine.templates import RenderError, compile_message

if TYPE_CHECKING:
    from engine.spec import Campaign

#: characters of a code
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: characters per code (the issue asks for at least 7)
CODE_LENGTH = 8
_SPACE = 62**CODE_LENGTH
_RANDOM = random.SystemRandom()  # os.urandom underneath: a CSPRNG

_URL = re.compile(r"(?<![A-Za-z0-9_])https?://[^\s<>]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\""
_PAIRS = {")": "(", "]": "[", "}": "{"}

UTM_KEYS = ("source", "medium", "campaign", "term", "content")


def find_urls(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every URL in ``text``, trailing punctuation excluded."""
    spans = []
    for match in _URL.finditer(text):
        start, end = match.span()
        while end > start:
            last = text[end - 1]
            unpaired = last in _PAIRS and text.count(_PAIRS[last], start, end) < text.count(
                last, start, end
            )
            if last not in _TRAILING and not unpaired:
                break
            end -= 1
        if end - start > len("https://"):
            spans.append((start, end))
    return spans


def new_code() -> str:
    """A fresh random code of :data:`CODE_LENGTH` base62 characters."""
    value = _RANDOM.randrange(_SPACE)
    chars = []
    for _ in range(CODE_LENGTH):
        value, digit = divmod(value, 62)
        chars.append(ALPHABET[digit])
    return "".join(chars)


def placeholder(index: int) -> str:
    """The stand-in code of a message's link ``index`` (0-based) until real codes exist."""
    return f"{index:0{CODE_LENGTH}d}"


def short_url(base_url: str, code: str) -> str:
    """The short link for ``code``."""
    return f"{base_url}/l/{code}"


def with_utm(url: str, utm: Mapping[str, str]) -> str:
    """``url`` with ``utm_<key>=value`` added; a parameter the URL already has is kept."""
    if not utm:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    extra = [(f"utm_{k}", v) for k, v in utm.items() if f"utm_{k}" not in present and v != ""]
    if not extra:
        return url
    joined = "&".join(filter(None, [parts.query, urlencode(extra)]))
    return urlunsplit(parts._replace(query=joined))


def ascii_url(url: str) -> str:
    """``url`` as ASCII, so that it can travel in a ``Location`` header: an international
    host name in IDNA (``xn--``), other non-ASCII characters percent-encoded (UTF-8)."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        try:
            netloc = netloc.encode("idna").decode("ascii")
        except UnicodeError:
            netloc = quote(netloc, safe=":@[]")
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return f"{parts.scheme}://{netloc}{quote(rest, safe=_URL_SAFE)}"


_URL_SAFE = "/?#[]@!$&'()*+,;=:%~-._"


@dataclass(frozen=True, slots=True)
class Shortened:
    """A body with placeholder short links, and the targets in order."""

    text: str
    targets: tuple[str, ...]


def shorten(text: str, base_url: str, utm: Mapping[str, str]) -> Shortened:
    """Replace each URL of ``text`` by a placeholder short link (see :func:`fill`)."""
    spans = find_urls(text)
    if not spans:
        return Shortened(text, ())
    out = []
    targets = []
    at = 0
    for index, (start, end) in enumerate(spans):
        out.append(text[at:start])
        out.append(short_url(base_url, placeholder(index)))
        targets.append(with_utm(ascii_url(text[start:end]), utm))
        at = end
    out.append(text[at:])
    return Shortened("".join(out), tuple(targets))


def fill(text: str, base_url: str, codes: list[str]) -> str:
    """``text`` (a body or a row of COPY text) with the placeholders replaced by ``codes``."""
    for index, code in enumerate(codes):
        text = text.replace(short_url(base_url, placeholder(index)), short_url(base_url, code), 1)
    return text


def fresh_codes(count: int, taken: set[str]) -> list[str]:
    """``count`` new codes, none of them in ``taken`` (which they are added to)."""
    codes: list[str] = []
    while len(codes) < count:
        code = new_code()
        if code not in taken:
            taken.add(code)
            codes.append(code)
    return codes


def rekey(messages: bytes, codes: bytes) -> tuple[bytes, bytes]:
    """A batch's COPY text (messages, link codes) with every code replaced by a fresh one.

    For the rare batch whose random code is already stored: each code is exactly
    :data:`CODE_LENGTH` characters after ``/l/``, so the replacement cannot touch anything
    else.
    """
    lines = codes.decode().splitlines(keepends=True)
    taken: set[str] = set()
    out = []
    for line in lines:
        old, rest = line.split("\t", 1)
        new = fresh_codes(1, taken)[0]
        messages = messages.replace(f"/l/{old}".encode(), f"/l/{new}".encode(), 1)
        out.append(f"{new}\t{rest}")
    return messages, "".join(out).encode()


# --- link-preview bots -------------------------------------------------------------------

#: user agents of link unfurlers and preview fetchers (matched case-insensitively)
BOT_AGENTS = re.compile(
    r"facebookexternalhit|facebookcatalog|whatsapp|twitterbot|slackbot|slack-imgproxy|"
    r"discordbot|telegrambot|linkedinbot|skypeuripreview|microsoftpreview|"
    r"googlebot|google-pagerenderer|applebot|iframely|embedly|pinterest|redditbot|"
    r"vkshare|viber|skype|bingpreview|bingbot|yandex|duckduckbot|preview|unfurl|"
    r"\bbot\b|crawler|spider",
    re.IGNORECASE,
)


def agent_class(user_agent: str | None) -> str:
    """``bot`` for a known link-preview fetcher, else ``human``."""
    return "bot" if user_agent and BOT_AGENTS.search(user_agent) else "human"


# --- a run's link plan ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """What shortening needs for one run: the base URL and the UTM values per variant."""

    base_url: str
    utm: Mapping[str | None, Mapping[str, str]]

    @classmethod
    def of(cls, campaign: Campaign, public_url: str | None) -> LinkPlan | None:
        """The plan of a campaign with ``links.track`` (None without); raise LinkError
        when there is no base URL, or a UTM template fails."""
        spec = campaign.links
        if not spec.track:
            return None
        base = spec.base_url or (public_url.rstrip("/") if public_url else None)
        if not base:
            raise LinkError(
                "links.track needs links.base_url in the campaign or webhooks.public_url "
                "in engine.yaml"
            )
        names: list[str | None] = [v.name for v in campaign.message.variants] or [None]
        utm = {name: _render_utm(campaign, name) for name in names}
        return cls(base, utm)

    def shorten(self, text: str, variant: str | None) -> Shortened:
        """``text`` with placeholder short links (see :func:`shorten`)."""
        return shorten(text, self.base_url, self.utm[variant])


class LinkError(EngineError):
    """Tracked links cannot be set up for a run."""


def _render_utm(campaign: Campaign, variant: str | None) -> dict[str, str]:
    context = {**campaign.vars, "campaign": campaign.name, "variant": variant or ""}
    values: dict[str, str] = {}
    for key, source in campaign.links.utm.items():
        from engine.spec import MessageSpec  # the model, without validating it again

        compiled = compile_message(MessageSpec.model_construct(body=source, locales={}))
        try:
            values[key] = compiled.render(context, None).text
        except RenderError as exc:
            raise LinkError(f"links.utm.{key}: {exc}") from exc
    return values
