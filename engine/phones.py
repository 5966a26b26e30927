"""Phone numbers: E.164 normalisation, region checks, masking for logs, the number's zone.

Everything the engine knows about a phone number lives here, so a campaign file, an
import, a typed command, a reply and an adapter read numbers the same way. Pure: it
imports ``phonenumbers`` and nothing that does I/O.

Numbers are stored in E.164 (``+27821234567``). ``normalise`` turns what people type
into that form with ``phonenumbers`` and requires ``is_valid_number``; ``mask`` is the
one way a number appears in logs.

``phonenumbers.parse`` + ``is_valid_number`` cost about 35 µs a number, more than the
whole rest of a row's import; the fast path below gives the same answers from the same
metadata in about 5 µs, and a test holds it to phonenumbers for every region.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberDesc, PhoneNumberFormat
from phonenumbers import timezone as phone_timezones

from engine.errors import EngineError


class ContactsError(EngineError):
    """A contacts file, region or number cannot be used; the message says which and why."""


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # use with fullmatch
# characters people put in numbers that phonenumbers would skip anyway; removing them
# first saves about a tenth of the parse
_PUNCTUATION = str.maketrans("", "", " \t\r\n-().\u00a0")
_HAS_DIGIT = re.compile(r"\d")
_PARSE_REASONS = {
    NumberParseException.NOT_A_NUMBER: "not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: " (too short)",
    phonenumbers.ValidationResult.TOO_LONG: " (too long)",
    phonenumbers.ValidationResult.INVALID_LENGTH: " (wrong length)",
}


def normalise(raw: str, region: str | None) -> str | None:
    """The number in E.164, or None when it is not a valid number."""
    return normalise_reason(raw, region)[0]


def normalise_reason(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """``(e164, None)`` for a valid number, else ``(None, why)`` for reports."""
    text = raw.translate(_PUNCTUATION)
    if not _HAS_DIGIT.search(text):
        return None, "empty" if not text else "not a number"
    if region is None and text.startswith("00"):
        text = "+" + text[2:]  # the international prefix of most countries
    return _fast_path(text, region) or _slow_path(text, region)


def _slow_path(text: str, region: str | None) -> tuple[str | None, str | None]:
    """normalise_reason by phonenumbers alone: the reference the fast path must agree with."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return None, _parse_reason(exc, text, region)
    if not phonenumbers.is_valid_number(number):
        return None, _invalid_reason(number)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if not _E164.fullmatch(e164):  # the contacts table's CHECK; never seen, but never crash a batch
        return None, "not representable in E.164"
    return e164, None


def _parse_reason(exc: NumberParseException, text: str, region: str | None) -> str:
    if exc.error_type != NumberParseException.INVALID_COUNTRY_CODE:
        return _PARSE_REASONS.get(exc.error_type, "not a number")
    if text.startswith("+"):
        return "unknown country code"
    if region is None:
        return "no country code and no default region"
    return f"unknown region {region}"


def _invalid_reason(number: phonenumbers.PhoneNumber) -> str:
    region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    length = _LENGTH_REASONS.get(phonenumbers.is_possible_number_with_reason(number), "")
    return f"invalid for region {region}{length}"


# The fast path. phonenumbers spends ~35 µs on parse + is_valid_number, mostly in Python
# plumbing around a handful of regular expressions; an import normalises every row, so
# these two functions do the same work directly on the metadata (about 4 µs for a number
# written with +). They follow phonenumberutil.parse and is_valid_number exactly, and
# tests/unit/test_phone.py checks them against phonenumbers for every region.

_TYPES = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number",
    "pager", "uan", "voicemail", "fixed_line", "mobile",
)  # fmt: skip


def _fast_path(text: str, region: str | None) -> tuple[str | None, str | None] | None:
    """normalise_reason's answer without ``parse`` where that is exact, else None."""
    if text.startswith("+"):
        split = _split_international(text)
        if split is None:
            return None
        if _is_valid(*split):
            return text, None
        country_code, nsn = split
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(nsn))
        return None, _invalid_reason(number)
    national = _split_national(text, region) if region is not None else None
    if national is not None and _is_valid(*national):
        e164 = f"+{national[0]}{national[1]}"
        return (e164, None) if _E164.fullmatch(e164) else None
    return None  # invalid national numbers take the slow path for its exact reason


def _split_international(text: str) -> tuple[int, str] | None:
    """``(country code, national number)`` of ``+digits`` as ``parse`` would give it, when
    ``parse`` would not also strip a national prefix or keep leading zeros; else None."""
    if not _E164.fullmatch(text):  # other strings with + take the slow path
        return None
    for size in (1, 2, 3):
        country_code = int(text[1 : size + 1])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            nsn = text[size + 1 :]
            if not 2 <= len(nsn) <= 17 or nsn[0] == "0":
                return None  # parse's length errors, or Italian leading zeros
            national_prefix = _national_prefix(country_code)
            if national_prefix is not None and national_prefix.match(nsn):
                return None  # parse may strip it
            return country_code, nsn
    return None


def _split_national(text: str, region: str) -> tuple[int, str] | None:
    """``(country code, NSN)`` that ``parse(text, region)`` gives for a national number
    *if that NSN is valid* (the caller checks), else None. With the national prefix
    stripped, a valid NSN is exactly what parse keeps: it strips the prefix whenever the
    rest matches the general pattern and has a possible (not local-only) length."""
    rules = _national_rules(region)
    if rules is None or not text.isascii() or not text.isdigit():
        return None
    country_code, national_prefix, international_prefix, local_only = rules
    if text.startswith(str(country_code)):
        return None  # parse would try it as a country code first
    idd = international_prefix.match(text)
    if idd:  # parse reads the rest as +<country code><NSN>, unless it starts with 0
        return _split_international("+" + text[idd.end() :])
    found = national_prefix.match(text) if national_prefix is not None else None
    nsn = text[found.end() :] if found else text
    if found and len(nsn) in local_only:
        return None
    if not 2 <= len(nsn) <= 17 or nsn[0] == "0":
        return None
    return country_code, nsn


@cache
def _national_rules(
    region: str,
) -> tuple[int, re.Pattern[str] | None, re.Pattern[str], frozenset[int]] | None:
    """What _split_national needs of a region, or None when its national prefix rule
    carries a carrier code or a transform (AR, BR, ...): those take the slow path."""
    metadata = PhoneMetadata.metadata_for_region(region.upper())
    if (
        metadata is None
        or metadata.general_desc is None
        or not metadata.international_prefix
        or metadata.country_code is None
    ):
        return None
    prefix = metadata.national_prefix_for_parsing
    compiled = re.compile(prefix) if prefix else None
    if compiled is not None and (compiled.groups or metadata.national_prefix_transform_rule):
        return None
    local_only = frozenset(metadata.general_desc.possible_length_local_only)
    idd = re.compile(metadata.international_prefix)
    return metadata.country_code, compiled, idd, local_only


@cache
def _national_prefix(country_code: int) -> re.Pattern[str] | None:
    """The national prefix pattern ``parse`` applies to numbers of this country code."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    pattern = metadata.national_prefix_for_parsing if metadata else None
    return re.compile(pattern) if pattern else None


class _Desc(NamedTuple):
    lengths: frozenset[int]  # empty: any length
    pattern: str


class _RegionRules(NamedTuple):
    """One region's validity rules. A number is valid when it matches the general
    description and at least one number type (``_number_type_helper`` != UNKNOWN); the
    types' patterns are joined into one alternation per length, so that is two matches."""

    leading_digits: re.Pattern[str] | None
    general_lengths: frozenset[int]  # empty: any length
    general: re.Pattern[str] | None
    by_length: dict[int, re.Pattern[str]]  # types that allow this length
    any_length: re.Pattern[str] | None  # types that allow every length

    def valid(self, nsn: str) -> bool:
        if self.general is None or (self.general_lengths and len(nsn) not in self.general_lengths):
            return False
        if self.general.fullmatch(nsn) is None:
            return False
        types = self.by_length.get(len(nsn), self.any_length)
        return types is not None and types.fullmatch(nsn) is not None


def _is_valid(country_code: int, nsn: str) -> bool:
    """``phonenumbers.is_valid_number`` for a number given as country code and NSN."""
    single, rules = _country_rules(country_code)
    if single:
        return rules[0].valid(nsn) if rules else False
    for region in rules:  # _region_code_for_number_from_list, then that region's check
        if region.leading_digits is not None:
            if region.leading_digits.match(nsn):
                return region.valid(nsn)
        elif region.valid(nsn):
            return True
    return False


@cache
def _country_rules(country_code: int) -> tuple[bool, tuple[_RegionRules, ...]]:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    rules = []
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        if metadata is not None and metadata.country_code == country_code:
            rules.append(_region_rules(metadata))
    return len(regions) == 1, tuple(rules)


def _region_rules(metadata: PhoneMetadata) -> _RegionRules:
    names = [t for t in _TYPES if t != "mobile" or not metadata.same_mobile_and_fixed_line_pattern]
    types = [d for d in (_desc(getattr(metadata, name)) for name in names) if d is not None]
    general = _desc(metadata.general_desc)
    lengths = sorted(set().union(*(d.lengths for d in types)))
    leading = metadata.leading_digits
    return _RegionRules(
        leading_digits=re.compile(leading) if leading is not None else None,
        general_lengths=general.lengths if general else frozenset(),
        general=re.compile(general.pattern) if general else None,
        by_length={
            n: _either(d for d in types if not d.lengths or n in d.lengths) for n in lengths
        },
        any_length=_either(d for d in types if not d.lengths),
    )


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return _Desc(frozenset(desc.possible_length), desc.national_number_pattern)


def _either(descs: Iterable[_Desc]) -> re.Pattern[str]:
    """One pattern that fully matches what any of ``descs`` fully matches (never: none)."""
    patterns = [f"(?:{d.pattern})" for d in descs]
    return re.compile("|".join(patterns) if patterns else "(?!)")


def check_region(region: str | None) -> str | None:
    """The region upper-cased, or ContactsError when phonenumbers does not know it."""
    if region is None:
        return None
    upper = region.strip().upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ContactsError(f"unknown region {region!r} (use an ISO 3166 code such as ZA)")
    return upper


def mask(phone: str) -> str:
    """The number for logs: country code and last 3 digits kept (``+27******567``)."""
    digits = sum(ch.isdigit() for ch in phone)
    keep_head = _country_code_length(phone) if phone.startswith("+") else 0
    keep_tail = 3 if digits - keep_head > 3 else 0
    out, seen = [], 0
    for ch in phone:
        if ch.isdigit():
            seen += 1
            hidden = keep_head < seen <= digits - keep_tail
            out.append("*" if hidden else ch)
        else:
            out.append(ch)
    return "".join(out)


def _country_code_length(phone: str) -> int:
    # ASCII digits only: str.isdigit() is also true of '²', which int() refuses
    digits = "".join(ch for ch in phone[:5] if "0" <= ch <= "9")
    for size in (1, 2, 3):
        code = digits[:size]
        if len(code) == size and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return size
    return 0


def is_e164(phone: str) -> bool:
    """Whether ``phone`` is written in E.164: ``+`` and 7 to 15 digits."""
    return _E164.fullmatch(phone) is not None


def require_e164(phone: str) -> None:
    """ContactsError (the number masked) unless ``phone`` is written in E.164."""
    if not is_e164(phone):
        raise ContactsError(f"not an E.164 number: {mask(phone)!r}")


def international(phone: str) -> str | None:
    """A number a provider reports, in E.164: ``+digits`` as given, anything else read
    without a region (``00`` as ``+``); None when that finds no valid number."""
    return phone if phone.startswith("+") and phone[1:].isdigit() else normalise(phone, None)


def as_e164(number: str) -> str:
    """``+`` and digits for an international number; anything else is returned as given."""
    text = number.strip().replace(" ", "")
    if text.isdigit() and not text.startswith("0"):
        return "+" + text
    return text


def parse_e164(value: str, region: str | None) -> str:
    """``value`` in E.164, or ValueError saying why in words for a campaign file."""
    number, reason = normalise_reason(value, region)
    if number is not None:
        return number
    if reason is not None and reason.startswith(("unknown", "no country code")):
        raise ValueError(
            f"{value!r} has no country code: write it as +<country code><number>"
            + ("" if region else ", or set default_region in engine.yaml")
        )
    if reason is not None and reason.startswith(("invalid", "not representable")):
        raise ValueError(f"invalid phone number {value!r}")
    raise ValueError(f"not a phone number: {value!r}")


# --- the number's zone ----------------------------------------------------------------

_NUMBER_ZONES: dict[str, str | None] = {}
#: numbers sharing their first 7 digits share a time zone in phonenumbers' data
_ZONE_PREFIX = 8


def number_zone(phone: str) -> str | None:
    """The single time zone of an E.164 number, if its numbering plan has one."""
    key = phone[:_ZONE_PREFIX]
    if key not in _NUMBER_ZONES:
        if len(_NUMBER_ZONES) > 65536:
            _NUMBER_ZONES.clear()
        _NUMBER_ZONES[key] = _zone_of(phone)
    return _NUMBER_ZONES[key]


def _zone_of(phone: str) -> str | None:
    try:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(phone))
    except phonenumbers.NumberParseException:
        return None
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None
