"""Tracked links (engine.links), the A/B split (engine.variants) and the winner's choice."""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal

import pytest

from engine import links, sms
from engine.spec import Campaign
from engine.variants import LEFT_OUT, Split
from engine.winner import choose

BASE = "https://s.example.com"


def _urls(text: str) -> list[str]:
    return [text[a:b] for a, b in links.find_urls(text)]


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("Go https://shop.example.com/a?b=1 now", ["https://shop.example.com/a?b=1"]),
        (
            "two: http://a.example/x, HTTPS://b.example/y.",
            ["http://a.example/x", "HTTPS://b.example/y"],
        ),
        ("(see https://a.example/p)", ["https://a.example/p"]),
        (
            "wiki https://en.wikipedia.org/wiki/Foo_(bar)!",
            ["https://en.wikipedia.org/wiki/Foo_(bar)"],
        ),
        ("quoted 'https://a.example/q'?", ["https://a.example/q"]),
        ("inside a word: xhttps://a.example/x and foo_http://b.example", []),
        ("bare https:// alone", []),
        ("no url at all", []),
    ],
)
def test_every_url_is_found_not_inside_words_and_without_trailing_punctuation(
    text: str, urls: list[str]
) -> None:
    assert _urls(text) == urls


def test_shortening_keeps_the_punctuation_and_the_rest_of_the_text() -> None:
    short = links.shorten(
        "Sale! https://shop.example.com/spring?x=1. Ends (https://e.example)", BASE, {}
    )
    assert short.text == f"Sale! {BASE}/l/00000000. Ends ({BASE}/l/00000001)"
    assert short.targets == ("https://shop.example.com/spring?x=1", "https://e.example")
    filled = links.fill(short.text, BASE, ["AbCdEfGh", "ZZZZZZZ9"])
    assert filled == f"Sale! {BASE}/l/AbCdEfGh. Ends ({BASE}/l/ZZZZZZZ9)"


def test_utm_parameters_are_added_and_existing_ones_kept() -> None:
    utm = {"source": "sms", "campaign": "spring sale"}
    assert links.with_utm("https://a.example/p?x=1", utm) == (
        "https://a.example/p?x=1&utm_source=sms&utm_campaign=spring+sale"
    )
    assert links.with_utm("https://a.example/p?utm_source=mail", utm) == (
        "https://a.example/p?utm_source=mail&utm_campaign=spring+sale"
    )
    assert links.with_utm("https://a.example/", {}) == "https://a.example/"


def test_a_target_with_non_ascii_characters_becomes_ascii() -> None:
    short = links.shorten("Olá https://café.example/ação?q=ñ!", BASE, {"source": "sms"})
    assert short.targets == ("https://xn--caf-dma.example/a%C3%A7%C3%A3o?q=%C3%B1&utm_source=sms",)
    assert short.text == f"Olá {BASE}/l/00000000!"


def test_codes_are_base62_of_fixed_length_and_unique_at_scale() -> None:
    taken: set[str] = set()
    codes = links.fresh_codes(200_000, taken)
    assert len(set(codes)) == len(codes) == 200_000
    assert all(len(c) == links.CODE_LENGTH >= 7 for c in codes[:1000])
    assert set("".join(codes[:1000])) <= set(links.ALPHABET)
    # not a sequence: consecutive codes share no long prefix
    assert sum(a[:3] == b[:3] for a, b in itertools.pairwise(codes)) < 50


def test_a_long_url_costs_a_segment_that_the_short_link_saves() -> None:
    body = "Spring sale, 20% off everything in store and online today only. Shop: "
    url = "https://shop.example.com/collections/spring-sale-2026?ref=sms&campaign=spring"
    tail = " Reply STOP to opt out"
    assert sms.analyze(body + url + tail).segments == 2
    short = links.shorten(body + url + tail, BASE, {})
    assert sms.analyze(short.text).segments == 1
    assert sms.analyze(links.fill(short.text, BASE, links.fresh_codes(1, set()))).segments == 1


def test_rekey_replaces_every_code_in_both_payloads() -> None:
    messages = f"1\t2\t+27\tsee {BASE}/l/AAAAAAAA and {BASE}/l/BBBBBBBB\n".encode()
    codes = b"AAAAAAAA\t1\t+27\t1\thttps://a\nBBBBBBBB\t1\t+27\t2\thttps://b\n"
    new_messages, new_codes = links.rekey(messages, codes)
    fresh = [line.split(b"\t")[0].decode() for line in new_codes.splitlines()]
    assert "AAAAAAAA" not in fresh and "BBBBBBBB" not in fresh
    assert all(f"/l/{code}".encode() in new_messages for code in fresh)


@pytest.mark.parametrize(
    ("agent", "kind"),
    [
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "bot"),
        ("WhatsApp/2.23.20.0 A", "bot"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "bot"),
        ("TelegramBot (like TwitterBot)", "bot"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", "human"),
        (None, "human"),
    ],
)
def test_link_preview_bots_are_told_apart(agent: str | None, kind: str) -> None:
    assert links.agent_class(agent) == kind


def _ab(winner: dict[str, object] | None = None, weights: tuple[int, int] = (50, 50)) -> Campaign:
    message: dict[str, object] = {
        "variants": [
            {"name": "short", "body": "A https://a.example", "weight": weights[0]},
            {"name": "friendly", "body": "B https://a.example", "weight": weights[1]},
        ]
    }
    if winner:
        message["winner"] = winner
    return Campaign.from_spec(
        {
            "name": "ab",
            "provider": "simulator",
            "schedule": {"now": True},
            "audience": {"groups": ["all"]},
            "message": message,
            "links": {"track": True},
        }
    )


PHONES = [f"+2782{n:07d}" for n in range(1000001, 1020001)]


def test_variants_split_by_weight_within_tolerance_and_stably() -> None:
    split = Split.of(_ab(weights=(30, 70)))
    assert split is not None
    counts = Counter(split.assign(p) for p in PHONES)
    assert abs(counts["short"] / len(PHONES) - 0.3) < 0.02
    assert abs(counts["friendly"] / len(PHONES) - 0.7) < 0.02
    again = Split.of(_ab(weights=(30, 70)))
    assert again is not None
    assert [again.assign(p) for p in PHONES[:500]] == [split.assign(p) for p in PHONES[:500]]


def test_a_winner_test_takes_its_share_then_the_rest_gets_the_winner() -> None:
    campaign = _ab({"test_share": "20%", "after": "2h"})
    test = Split.of(campaign)
    rest = Split.of(campaign, winner="friendly")
    assert test is not None and rest is not None
    first = [test.assign(p) for p in PHONES]
    second = [rest.assign(p) for p in PHONES]
    in_test = sum(v != LEFT_OUT for v in first)
    assert abs(in_test / len(PHONES) - 0.2) < 0.02
    assert Counter(v for v in first if v != LEFT_OUT).keys() == {"short", "friendly"}
    # every recipient exactly once: in the test, or in the rest with the winner
    assert all((a == LEFT_OUT) != (b == LEFT_OUT) for a, b in zip(first, second, strict=True))
    assert {v for v in second if v != LEFT_OUT} == {"friendly"}


def test_the_winner_is_the_best_rate_and_a_tie_goes_to_the_first() -> None:
    figures = [
        {
            "variant": "short",
            "click_through_rate": Decimal("0.10"),
            "delivery_rate": Decimal("0.9"),
        },
        {
            "variant": "friendly",
            "click_through_rate": Decimal("0.25"),
            "delivery_rate": Decimal("0.8"),
        },
    ]
    order = ["short", "friendly"]
    assert choose("clicks", figures, order) == ("friendly", Decimal("0.25"))
    assert choose("delivered", figures, order) == ("short", Decimal("0.9"))
    tie = [{**f, "click_through_rate": Decimal("0.2")} for f in figures]
    assert choose("clicks", tie, order)[0] == "short"
    none = [{**f, "click_through_rate": None} for f in figures]
    assert choose("clicks", none, order) == ("short", None)


def test_a_campaign_without_links_or_variants_stores_the_spec_it_stored_before() -> None:
    """Unused keys stay out of the stored spec, so its hash (apply's idempotence) is the one
    computed before tracked links and variants existed."""
    plain = Campaign.from_spec(
        {
            "name": "plain",
            "provider": "simulator",
            "schedule": {"now": True},
            "audience": {"groups": ["all"]},
            "message": {"body": "Hi"},
        }
    )
    spec = plain.spec_json()
    assert "links" not in spec and set(spec["message"]) == {
        "body",
        "locales",
        "encoding",
        "max_segments",
    }
    assert Campaign.from_spec(spec) == plain
    ab = _ab({"test_share": 0.5, "after": "1h"})
    assert Campaign.from_spec(ab.spec_json()) == ab
    assert ab.spec_json()["links"]["track"] is True
