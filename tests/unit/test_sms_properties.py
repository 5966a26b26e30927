"""Properties of SMS analysis, checked against a slow, independent reference counter."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.sms import GSM7, SMART_TABLE, UCS2, Analysis, NotGsmError, analyze, analyze_for
from tests.unit.test_sms import GSM_BASIC_REF, GSM_EXTENSION_REF

GSM_REF = GSM_BASIC_REF | GSM_EXTENSION_REF
SINGLE = {GSM7: 160, UCS2: 70}
PART = {GSM7: 153, UCS2: 67}

# Pieces that stress the rules: escape pairs, CR LF, surrogate pairs, and clusters of
# every kind UAX #29 knows (flags, skin tones, ZWJ sequences, combining marks, Hangul
# jamo, Indic conjuncts, prepended and spacing marks).
TRICKY = [
    "\r\n", "€", "{", "\\", "\f", "ç", "á", "“", "…", "\u00a0", "\t", "\u200b", "Ж", "中",
    "😀", "🇿🇦", "🇿", "👍🏽", "🏽", "👨\u200d👩\u200d👧", "\u200d", "❤\ufe0f", "e\u0301",
    "\u0301", "\u1100\u1161\u11a8", "\u0915\u094d\u0937", "\u0600", "\u0903", "\U0001f9d1",
    "\u0915\u094d\u200d\u0937", "\u0938\u094d\u0924\u094d\u0930", "\u0915\u0301\u094d",
]  # fmt: skip

GSM_PIECES = ["\r\n", "\r", "\n", "€", "{", "\\", "\f", "~", "a", "é"]

gsm_texts = st.lists(st.sampled_from(sorted(GSM_REF)) | st.just("\r\n"), max_size=400).map("".join)
mixed_texts = st.lists(
    st.sampled_from(sorted(GSM_BASIC_REF)) | st.sampled_from(TRICKY) | st.text(max_size=3),
    max_size=250,
).map("".join)
smart_texts = st.lists(
    st.sampled_from(sorted(GSM_REF)) | st.sampled_from(sorted(SMART_TABLE)), max_size=300
).map("".join)


@st.composite
def near_a_cut(draw: st.DrawFn) -> str:
    """Filler that brings tricky pieces right up to the first or second part boundary."""
    filler, per_part = draw(st.sampled_from([("a", 153), ("é", 153), ("ç", 67), ("Ж", 67)]))
    lead = draw(st.integers(per_part - 6, per_part)) + draw(st.sampled_from([0, per_part]))
    # GSM pieces keep a GSM filler's message GSM-7, so its own boundaries get tested.
    kinds = GSM_PIECES if per_part == 153 and draw(st.booleans()) else TRICKY
    pieces = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=6))
    tail = draw(st.text(alphabet=filler + "x ", max_size=80))
    return filler * lead + "".join(pieces) + tail


texts = gsm_texts | mixed_texts | smart_texts | near_a_cut() | st.text(max_size=200)


def ref_units(text: str, encoding: str) -> int:
    """Septets or UTF-16 code units, one character at a time."""
    if encoding == GSM7:
        return sum(2 if c in GSM_EXTENSION_REF else 1 for c in text)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def clusters(text: str) -> list[tuple[int, int]]:
    """(start, end) of every cluster as the reference counters see them.

    UAX #29 clusters, each split again between CR and LF and before a consonant that
    follows a virama or the marks after one (the counters predate rule GB9c).
    """
    spans = []
    for match in regex.finditer(r"\X", text):
        start, end = match.span()
        for i in range(start + 1, end):
            if text[i - 1 : i + 1] == "\r\n" or (
                is_conjunct_link(text[i - 1]) and is_consonant(text[i])
            ):
                spans.append((start, i))
                start = i
        spans.append((start, end))
    return spans


def is_conjunct_link(char: str) -> bool:
    """A virama, or a mark or joiner that may sit between it and the next consonant."""
    return regex.fullmatch(r"\p{InCB=Linker}|\p{InCB=Extend}", char) is not None


def is_consonant(char: str) -> bool:
    return regex.fullmatch(r"\p{InCB=Consonant}", char) is not None


def test_reference_clusters_split_crlf_and_conjuncts() -> None:
    text = "a\r\nक्ष🇿🇦e\u0301"
    assert [text[s:e] for s, e in clusters(text)] == [
        "a", "\r", "\n", "क्", "ष", "🇿🇦", "e\u0301"
    ]  # fmt: skip


def check(result: Analysis) -> None:
    """Assert the invariants every analysis must hold."""
    text, encoding = result.text, result.encoding
    assert "".join(result.parts) == text
    assert result.segments == len(result.parts)
    assert result.units == ref_units(text, encoding)
    if result.units <= SINGLE[encoding]:
        assert result.parts == (text,)
        return
    assert result.segments > 1
    assert all(ref_units(p, encoding) <= PART[encoding] for p in result.parts)
    spans = clusters(text)
    cut = 0
    for part in result.parts[:-1]:
        cut += len(part)
        check_cut(text, encoding, cut, ref_units(part, encoding), spans)


def check_cut(text: str, encoding: str, cut: int, used: int, spans: list[tuple[int, int]]) -> None:
    """A cut is at a cluster boundary and the next cluster would not have fitted."""
    start, end = next((s, e) for s, e in spans if s <= cut < e)
    if start == cut:
        assert used + ref_units(text[start:end], encoding) > PART[encoding]
    else:
        # Only a cluster too big for any part may be cut, and then as late as possible.
        assert ref_units(text[start:end], encoding) > PART[encoding]
        assert used + ref_units(text[cut], encoding) > PART[encoding]


@settings(max_examples=400)
@given(texts)
def test_auto(text: str) -> None:
    result = analyze(text)
    check(result)
    is_gsm = set(text) <= GSM_REF
    assert result.text == text
    assert result.encoding == (GSM7 if is_gsm else UCS2)
    assert result.non_gsm == tuple((i, c) for i, c in enumerate(text) if c not in GSM_REF)


@settings(max_examples=400)
@given(texts)
def test_smart(text: str) -> None:
    result = analyze(text, smart=True)
    check(result)
    if result.encoding == UCS2:
        assert (result.text, result.replacements) == (text, ())
        assert all(text[i] == c and c not in SMART_TABLE for i, c in result.non_gsm)
    else:
        assert set(result.text) <= GSM_REF
        assert sum(n for _, _, n in result.replacements) == sum(c in SMART_TABLE for c in text)


@given(texts)
def test_forced_ucs2(text: str) -> None:
    result = analyze_for(text, "ucs2")
    check(result)
    assert result.encoding == UCS2


@given(texts)
def test_forced_gsm7(text: str) -> None:
    auto = analyze(text)
    if auto.encoding == GSM7:
        assert analyze_for(text, "gsm7") == auto
        return
    with pytest.raises(NotGsmError) as caught:
        analyze_for(text, "gsm7")
    assert caught.value.offenders == auto.non_gsm != ()
