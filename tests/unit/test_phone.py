"""Phone numbers: E.164 normalisation, its reasons, the fast path, masking for logs, the
readers the campaign file, replies and adapters use, and a number's time zone."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from engine.phones import (
    ContactsError,
    _fast_path,
    _slow_path,
    as_e164,
    check_region,
    international,
    is_e164,
    mask,
    normalise,
    normalise_reason,
    number_zone,
    parse_e164,
    require_e164,
)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+27821234567", None, "+27821234567"),
        ("+27 82 123 4567", None, "+27821234567"),
        ("+27 (0)82 123 4567", None, "+27821234567"),
        ("0027821234567", None, "+27821234567"),  # 00 read as + when there is no region
        ("082 123 4567", "ZA", "+27821234567"),
        ("(082) 123-4567", "ZA", "+27821234567"),
        ("082.123.4567", "ZA", "+27821234567"),
        ("27821234567", "ZA", "+27821234567"),
        ("0044 7911 123456", "ZA", "+447911123456"),  # ZA's international prefix
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1 604 555 0123", "ZA", "+16045550123"),  # Canada shares +1
        ("07911 123456", "GB", "+447911123456"),
        ("011 44 7911 123456", "US", "+447911123456"),
        ("+39 06 6982 1234", None, "+390669821234"),  # Italy keeps the leading zero
        ("(11) 96123-4567", "BR", "+5511961234567"),
        ("\u0660\u0668\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667", "ZA", "+27821234567"),
        ("  082 123 4567  ", "za", "+27821234567"),
        ("+27821234567\n", None, "+27821234567"),
    ],
)
def test_normalise_valid_numbers(raw: str, region: str | None, expected: str) -> None:
    assert normalise(raw, region) == expected
    assert normalise_reason(raw, region) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "ZA", "empty"),
        ("  - ", None, "empty"),
        ("n/a", "ZA", "not a number"),
        ("call me", None, "not a number"),
        ("082 123 4567", None, "no country code and no default region"),
        ("+999 123 4567", None, "unknown country code"),
        ("+27 8", None, "too short"),
        ("0000000000000000000", "ZA", "too long"),
        ("12", "ZA", "invalid for region ZA (too short)"),
        ("+27 12345", None, "invalid for region ZA"),
        ("+27 82 123 45678", None, "invalid for region ZA"),
        ("+1 415 555 26711", None, "invalid for region US (too long)"),
        ("0821234567", "XX", "unknown region XX"),
    ],
)
def test_normalise_invalid_numbers_say_why(raw: str, region: str | None, reason: str) -> None:
    assert normalise_reason(raw, region) == (None, reason)
    assert normalise(raw, region) is None


def test_check_region() -> None:
    assert check_region(" za ") == "ZA"
    assert check_region(None) is None
    with pytest.raises(ContactsError, match="unknown region 'XX'"):
        check_region("XX")


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+27821234567", "+27******567"),
        ("+14155552671", "+1*******671"),
        ("+447911123456", "+44*******456"),
        ("+2682123456", "+268****456"),  # three-digit country code (Eswatini)
        ("0821234567", "*******567"),  # not E.164: only the last 3 digits stay
        ("+123", "+1**"),  # too short to keep 3 digits and still hide anything
        ("", ""),
    ],
)
def test_mask(phone: str, masked: str) -> None:
    assert mask(phone) == masked


def test_mask_takes_unicode_digits_without_failing() -> None:
    # '²' is a digit to str.isdigit() but not to int(): a raw, invalid number in a log line
    # must be masked, not raise
    assert mask("+2²7821234567") == "+2²*******567"


def test_mask_hides_every_middle_digit_of_every_valid_example() -> None:
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        if example is None:
            continue
        e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
        code = str(example.country_code)
        masked = mask(e164)
        assert masked.startswith(f"+{code}*"), (region, masked)
        assert masked[-3:] == e164[-3:]
        assert set(masked[len(code) + 1 : -3]) == {"*"}


# --- the fast path agrees with phonenumbers -------------------------------------------


def _examples() -> list[tuple[str, str | None]]:
    """Every region's example numbers of every type, written in several ways and mutated."""
    cases: list[tuple[str, str | None]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.VOIP,
                     PhoneNumberType.TOLL_FREE, PhoneNumberType.PREMIUM_RATE,
                     PhoneNumberType.UAN, PhoneNumberType.PAGER):  # fmt: skip
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                cases.extend(_written(example, region))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            cases.extend(_written(example, None))
    return cases


def _written(number: phonenumbers.PhoneNumber, region: str | None) -> list[tuple[str, str | None]]:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    national = "".join(ch for ch in phonenumbers.format_number(
        number, PhoneNumberFormat.NATIONAL) if ch.isdigit())  # fmt: skip
    variants = []
    for text in (e164, national):
        variants += [text, text[:-1], text + "7", text[:-1] + str((int(text[-1]) + 1) % 10)]
    cases: list[tuple[str, str | None]] = [(v, region) for v in variants]
    cases += [(v, None) for v in variants if v.startswith("+")]
    cases += [(v, "ZA") for v in variants]
    if region is not None:
        cases.append(("00" + e164[1:], region))
    return cases


def test_fast_path_agrees_with_phonenumbers_on_every_region() -> None:
    cases = _examples()
    assert len(cases) > 20_000
    taken = 0
    for text, region in cases:
        fast = _fast_path(text, region)
        if fast is not None:
            taken += 1
            assert fast == _slow_path(text, region), (text, region)
    assert taken > len(cases) * 0.6  # the fast path is what most numbers take


def test_fast_path_takes_common_numbers() -> None:
    assert _fast_path("+27821234567", None) == ("+27821234567", None)
    assert _fast_path("0821234567", "ZA") == ("+27821234567", None)
    assert _fast_path("00447911123456", "ZA") == ("+447911123456", None)
    assert _fast_path("+27123456", None) == (None, "invalid for region ZA")


REGIONS = ["ZA", "US", "GB", "BR", "AR", "IT", "DE", "MX", "IN", "NG", "KE", "FR", "CN", "RU"]


@settings(max_examples=400, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=3, max_size=16),
    plus=st.booleans(),
    region=st.sampled_from([None, *REGIONS]),
)
def test_fast_path_agrees_with_phonenumbers_on_random_digits(
    digits: str, plus: bool, region: str | None
) -> None:
    text = "+" + digits if plus else digits
    fast = _fast_path(text, region)
    if fast is not None:
        assert fast == _slow_path(text, region)


# --- the readers built on normalise ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+27 82 123 4567", None, "+27821234567"),
        ("082 123 4567", "ZA", "+27821234567"),
        ("0027821234567", None, "+27821234567"),  # read as an import reads it
    ],
)
def test_parse_e164_reads_a_number_as_an_import_does(
    raw: str, region: str | None, expected: str
) -> None:
    assert parse_e164(raw, region) == expected == normalise(raw, region)


@pytest.mark.parametrize(
    ("raw", "region", "message"),
    [
        (
            "082 123 4567",
            None,
            "'082 123 4567' has no country code: write it as "
            "+<country code><number>, or set default_region in engine.yaml",
        ),
        (
            "+999 123 4567",
            "ZA",
            "'+999 123 4567' has no country code: write it as +<country code><number>",
        ),
        ("+1555", None, "invalid phone number '+1555'"),
        ("call me", "ZA", "not a phone number: 'call me'"),
        ("", None, "not a phone number: ''"),
    ],
)
def test_parse_e164_says_why_in_campaign_file_words(
    raw: str, region: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_e164(raw, region)


def test_international_reads_what_providers_send() -> None:
    assert international("+27821234567") == "+27821234567"
    assert international("+1") == "+1"  # +digits are taken as the provider wrote them
    assert international("00 27 82 123 4567") == "+27821234567"
    assert international("27821234567") is None  # no + and no region: no country code
    assert international("STOP") is None


def test_as_e164_adds_the_plus_and_leaves_the_rest() -> None:
    assert as_e164(" 27 82 123 4567 ") == "+27821234567"
    assert as_e164("+27821234567") == "+27821234567"
    assert as_e164("0821234567") == "0821234567"
    assert as_e164("short-code") == "short-code"


def test_require_e164_masks_the_number_it_refuses() -> None:
    assert is_e164("+27821234567") and not is_e164("27821234567")
    require_e164("+27821234567")
    with pytest.raises(ContactsError, match=r"^not an E\.164 number: '\*\*\* \*\*\* \*567'$"):
        require_e164("082 123 4567")


def test_number_zone_only_when_the_numbering_plan_has_one() -> None:
    assert number_zone("+27821234567") == "Africa/Johannesburg"
    assert number_zone("+14155552671") == "America/Los_Angeles"
    assert number_zone("+79161234567") is None  # Russia spans many zones
    assert number_zone("+999") is None
