"""Audience: phone numbers, contacts and their CSV import, groups, suppressions.

Phone numbers are stored in E.164 (``+27821234567``). ``normalise`` turns what people
type into that form with ``phonenumbers`` and requires ``is_valid_number``; ``mask``
is the one way a number appears in logs.

Importing a CSV (``import_contacts``)
-------------------------------------
- The header row must name a ``phone`` column. Header names are case-insensitive; a
  BOM, surrounding whitespace and inner runs of whitespace (``First Name`` ->
  ``first_name``) are normalised. The delimiter is the one of ``,`` ``;`` or tab that
  the header line uses most (spreadsheets in many locales write ``;``). Errors name a
  column only when it is the offending one (``column named twice: phone``); they never
  quote other cells, because a file that is not a contacts list at all may hold secrets.
- Limits, each an error naming the line: at most ``MAX_COLUMNS`` (1,000) header
  columns, ``MAX_LINE`` (1 Mi) characters a line and ``MAX_CELL`` (csv's 128 Ki) a
  cell. Nothing is written when the header is refused; a later error keeps the batches
  before it (below).
- ``first_name``, ``last_name``, ``locale`` and ``timezone`` are columns of their own;
  every other named column becomes a key in ``attributes`` (empty cells are left out,
  values stay strings). Columns with an empty header are ignored.
- A row is *invalid* (skipped, reported with its 1-based line number in the file and a
  reason) when its number does not normalise, when it has non-empty cells beyond the
  header's columns (a sign of an unquoted delimiter shifting the cells), or when a cell
  holds a character PostgreSQL text cannot store (NUL, or a lone surrogate in a stream).
  The reported number has such characters replaced by U+FFFD. Blank lines are
  ignored and not counted.
- An unknown ``timezone`` (not an IANA name; ``africa/johannesburg`` is accepted as
  ``Africa/Johannesburg``) does not cost the contact: the row is imported without the
  zone and the cell is reported as a *warning*. A stored zone therefore always loads
  with ``ZoneInfo``, which the scheduler relies on.
- Rows with the same E.164 number in one file are applied in file order, field by
  field, exactly as the database applies a re-import: a later non-empty cell replaces
  an earlier one and attributes merge. Every repeat is counted in
  ``duplicates_in_file`` (not in ``imported`` or ``updated``), so
  ``rows == imported + updated + invalid_total + duplicates_in_file``.
- An existing contact is updated, never duplicated: names, locale and timezone are
  overwritten only by non-empty cells, ``attributes = attributes || new``, and
  ``updated_at`` is bumped.
- The group is created if missing, even when no row is valid.
- The file is streamed in batches (``BATCH_SIZE`` rows): each batch is COPYed into a
  temporary staging table and applied by one set-based upsert, which also adds group
  membership, all in one transaction; so a failure mid-file keeps the batches before
  it, and memory stays at about two batches whatever the file's size. While PostgreSQL
  applies one batch, a thread reads and normalises the next.
- A repeat that lands in a later batch is recognised in the database: its contact was
  already written (``updated_at``) since the import started. A contact that another
  session writes during the import is therefore counted as a repeat, not an update.
- ``phonenumbers.parse`` + ``is_valid_number`` cost about 35 µs a number, more than the
  whole rest of a row's import; the fast path below gives the same answers from the
  same metadata in about 5 µs, and a test holds it to phonenumbers for every region.

Suppressions: ``channel='*'`` suppresses every channel. ``unsuppress`` with ``'*'`` lifts
every suppression of the number; with a channel it lifts only that channel's row (a
``'*'`` row still applies).
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import logging
import re
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import asyncpg
import orjson
import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberDesc, PhoneNumberFormat

from engine.errors import EngineError

log = logging.getLogger(__name__)

BATCH_SIZE = 10_000
#: invalid rows (and warnings) kept in an ImportReport; the rest are only counted
MAX_PROBLEMS = 1000
#: columns a header may have; more is an error (a contacts file needs a handful)
MAX_COLUMNS = 1000
#: characters in one line of the file, and (csv's own limit) in one cell
MAX_LINE = 1 << 20
MAX_CELL = csv.field_size_limit()
CONTACT_FIELDS = ("first_name", "last_name", "locale", "timezone")

# --- SQL ------------------------------------------------------------------------------

#: the per-connection staging table for one batch (dropped when the import ends)
SQL_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS audience_import_stage (
    phone       text NOT NULL,
    first_name  text,
    last_name   text,
    locale      text,
    timezone    text,
    attributes  text NOT NULL
)
"""

#: emptied in each batch's transaction, which may be a savepoint in the caller's
SQL_CLEAR_STAGING = "TRUNCATE audience_import_stage"

SQL_DROP_STAGING = "DROP TABLE IF EXISTS audience_import_stage"

#: the import's start: contacts written since then by an earlier batch are repeats
SQL_NOW = "SELECT now()"

#: the group's id, creating it if missing (DO UPDATE so the id returns even on conflict)
SQL_ENSURE_GROUP = """
INSERT INTO groups (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id
"""

#: Apply the staged batch: upsert contacts and add them to group $1 (NULL: none). Counts
#: new contacts, updated ones, and repeats: numbers an earlier batch of this import (which
#: started at $2) already wrote. Every CTE reads the snapshot from before the statement,
#: so ``earlier`` sees the contacts as they were; its scalar subquery is one index probe
#: a row whatever the table's size. ``xmax = 0`` holds exactly for freshly inserted rows.
SQL_APPLY_BATCH = """
WITH earlier AS (
    SELECT count(*) AS n
    FROM audience_import_stage s
    WHERE (SELECT c.updated_at FROM contacts c WHERE c.phone = s.phone) >= $2
), upserted AS (
    INSERT INTO contacts AS c (phone, first_name, last_name, locale, timezone, attributes)
    SELECT phone, first_name, last_name, locale, timezone, attributes::jsonb
    FROM audience_import_stage
    ON CONFLICT (phone) DO UPDATE SET
        first_name = COALESCE(EXCLUDED.first_name, c.first_name),
        last_name  = COALESCE(EXCLUDED.last_name, c.last_name),
        locale     = COALESCE(EXCLUDED.locale, c.locale),
        timezone   = COALESCE(EXCLUDED.timezone, c.timezone),
        attributes = c.attributes || EXCLUDED.attributes,
        updated_at = now()
    RETURNING c.id, (c.xmax = 0) AS inserted
), joined AS (
    INSERT INTO group_members (group_id, contact_id)
    SELECT $1::bigint, id FROM upserted WHERE $1::bigint IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT count(*) FILTER (WHERE inserted)                          AS inserted,
       count(*) FILTER (WHERE NOT inserted) - (SELECT n FROM earlier) AS updated,
       (SELECT n FROM earlier)                                    AS repeated
FROM upserted
"""

SQL_SUPPRESS = """
INSERT INTO suppressions (phone, channel, reason, source) VALUES ($1, $2, $3, $4)
ON CONFLICT (phone, channel) DO NOTHING
RETURNING true
"""

#: channel '*' lifts every suppression of the number
SQL_UNSUPPRESS = """
DELETE FROM suppressions WHERE phone = $1 AND ($2 = '*' OR channel = $2)
"""

#: would a message on channel $2 be blocked ('*' rows block every channel)
SQL_IS_SUPPRESSED = """
SELECT EXISTS (SELECT FROM suppressions WHERE phone = $1 AND channel IN ($2, '*'))
"""

SQL_LIST_GROUPS = """
SELECT g.name, count(m.contact_id) AS members, g.created_at
FROM groups g LEFT JOIN group_members m ON m.group_id = g.id
GROUP BY g.id
ORDER BY g.name
"""


class ContactsError(EngineError):
    """A contacts file, region or number cannot be used; the message says which and why."""


# --- phone numbers --------------------------------------------------------------------

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


# --- CSV layout and rows (pure; prepare_batch runs in a worker thread) ---------------


class RowProblem(NamedTuple):
    """A reported row: its 1-based line in the file, the offending value, and why."""

    line: int
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each known column sits in a row. Rows are padded with empty cells to
    ``width + 1`` cells, and an absent column reads the cell at ``width``."""

    phone: int
    fields: tuple[int, ...]  # positions of CONTACT_FIELDS
    attributes: tuple[tuple[str, int], ...]
    width: int
    names: tuple[str, ...] = ()  # normalised header names, "" for a column without one


def layout(header: list[str], source: str = "CSV") -> Layout:
    """The layout of a header row, or ContactsError naming what is wrong with it
    (never quoting a cell: the file may not be a contacts list at all)."""
    _check_header(header, source)
    names = [_column_name(cell) for cell in header]
    repeated = sorted(name for name, n in Counter(filter(None, names)).items() if n > 1)
    if repeated:
        raise ContactsError(f"{source}: column named twice: {', '.join(repeated)}")
    if "phone" not in names:
        raise ContactsError(
            f"{source}: the header needs a 'phone' column; none of its {len(names):,} columns is "
            "named phone (names ignore case, and spaces become _)"
        )
    position = {name: i for i, name in enumerate(names) if name}
    reserved = {"phone", *CONTACT_FIELDS}
    return Layout(
        phone=position["phone"],
        fields=tuple(position.get(name, len(names)) for name in CONTACT_FIELDS),
        attributes=tuple((n, i) for n, i in position.items() if n not in reserved),
        width=len(names),
        names=tuple(names),
    )


def _check_header(header: list[str], source: str) -> None:
    if len(header) > MAX_COLUMNS:
        raise ContactsError(
            f"{source}: the header has {len(header):,} columns; at most {MAX_COLUMNS:,} are allowed"
        )
    for number, cell in enumerate(header, 1):
        if found := _UNSTORABLE.search(cell):
            raise ContactsError(
                f"{source}: column {number} of the header holds {found[0]!r}, which "
                "cannot be stored"
            )


def _column_name(cell: str) -> str:
    return "_".join(cell.replace("\ufeff", "").lower().split())


class Contact(NamedTuple):
    """One row's values; None and absent keys mean the cell was empty."""

    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, str]

    def then(self, later: Contact) -> Contact:
        """This contact with a later row of the same number applied over it."""
        return Contact(
            later.first_name or self.first_name,
            later.last_name or self.last_name,
            later.locale or self.locale,
            later.timezone or self.timezone,
            {**self.attributes, **later.attributes},
        )


@dataclass(slots=True)
class Prepared:
    """A batch of rows ready to load: one record per distinct number, and what was wrong."""

    rows: int = 0
    records: list[tuple[str, str | None, str | None, str | None, str | None, str]] = field(
        default_factory=list
    )
    invalid: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)
    duplicates: int = 0


def prepare_batch(rows: list[tuple[int, list[str]]], where: Layout, region: str | None) -> Prepared:
    """Normalise and validate ``(line, cells)`` rows; merge repeats of a number in order."""
    batch = Prepared(rows=len(rows))
    staged: dict[str, Contact] = {}
    for line, cells in rows:
        if len(cells) <= where.width:
            cells.extend([""] * (where.width + 1 - len(cells)))
        e164 = _row_number(line, cells, where, region, batch)
        if e164 is None:
            continue
        contact = _row_contact(line, cells, where, batch)
        earlier = staged.get(e164)
        if earlier is not None:
            batch.duplicates += 1
            contact = earlier.then(contact)
        staged[e164] = contact
    batch.records = [(phone, *c[:4], _dumps(c.attributes)) for phone, c in staged.items()]
    return batch


def _row_number(
    line: int, cells: list[str], where: Layout, region: str | None, batch: Prepared
) -> str | None:
    raw = cells[where.phone].strip()
    if any(cell.strip() for cell in cells[where.width :]):
        extra = f"{len(cells)} cells but the header has {where.width} columns"
        batch.invalid.append(RowProblem(line, _storable(raw), extra))
        return None
    if _UNSTORABLE.search("".join(cells)):
        batch.invalid.append(RowProblem(line, _storable(raw), _unstorable(cells, where)))
        return None
    e164, reason = normalise_reason(raw, region)
    if reason is not None:
        batch.invalid.append(RowProblem(line, raw, reason))
    return e164


def _row_contact(line: int, cells: list[str], where: Layout, batch: Prepared) -> Contact:
    first, last, locale, zone = [cells[i].strip() or None for i in where.fields]
    if zone is not None:
        known = known_timezone(zone)
        if known is None:
            batch.warnings.append(RowProblem(line, zone, "unknown timezone; imported without it"))
        zone = known
    attributes = {name: value for name, i in where.attributes if (value := cells[i].strip())}
    return Contact(first, last, locale, zone, attributes)


# what a PostgreSQL text (or jsonb) value cannot hold: NUL, and surrogates, which a
# decoded file never has but a caller's stream may
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)


def _unstorable(cells: list[str], where: Layout) -> str:
    """Why a row is refused: the first unstorable character and its column's name."""
    for index, cell in enumerate(cells):
        if found := _UNSTORABLE.search(cell):
            column = where.names[index] if index < len(where.names) else ""
            return f"unstorable character {found[0]!r} in column {column or index + 1}"
    raise AssertionError("no unstorable character in the row")


@lru_cache(maxsize=4096)
def known_timezone(name: str) -> str | None:
    """The IANA zone name (case corrected), or None when there is no such zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _zones_by_lower_name().get(name.lower())
    return name


@lru_cache(maxsize=1)
def _zones_by_lower_name() -> dict[str, str]:
    return {zone.lower(): zone for zone in available_timezones()}


def _dumps(value: dict[str, str]) -> str:
    return orjson.dumps(value).decode()


# --- reading the file -----------------------------------------------------------------


@contextmanager
def _opened(source: Path | TextIO, name: str | None) -> Iterator[tuple[TextIO, str]]:
    if not isinstance(source, Path):
        yield source, name or str(getattr(source, "name", "CSV"))
        return
    try:
        stream = source.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ContactsError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    with stream:
        yield stream, str(source)


def _reader(stream: TextIO, source: str) -> Iterator[list[str]]:
    """A csv reader, its delimiter taken from the header line."""
    lines = _capped_lines(stream, source)
    try:
        first = next(lines, "")
    except UnicodeDecodeError as exc:
        raise ContactsError(f"{source}:1: not UTF-8 text; save it as 'CSV UTF-8'") from exc
    delimiter = max(",;\t", key=first.count) if first.strip() else ","
    return csv.reader(itertools.chain([first], lines), delimiter=delimiter)


def _capped_lines(stream: TextIO, source: str) -> Iterator[str]:
    """The stream's lines, an error naming the first longer than MAX_LINE characters
    (read no further than that, so one endless line never fills the memory)."""
    readline = stream.readline
    for number in itertools.count(1):
        line = readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ContactsError(f"{source}:{number}: line longer than {MAX_LINE:,} characters")
        yield line


def _batches(
    reader: Iterator[list[str]], source: str, size: int
) -> Iterator[list[tuple[int, list[str]]]]:
    """Non-blank ``(line, cells)`` rows in lists of ``size``; line = the row's first line."""
    batch: list[tuple[int, list[str]]] = []
    line_num = _line_counter(reader)
    done = line_num()
    for cells in _guarded(reader, source, line_num):
        start, done = done + 1, line_num()
        if not any(cells):
            continue
        batch.append((start, cells))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _line_counter(reader: Iterator[list[str]]) -> Callable[[], int]:
    return lambda: int(getattr(reader, "line_num", 0))


def _guarded(
    reader: Iterator[list[str]], source: str, line_num: Callable[[], int]
) -> Iterator[list[str]]:
    """The reader's rows, its errors turned into ContactsError with the line."""
    start = line_num() + 1  # the first line of the row being read
    try:
        for cells in reader:
            yield cells
            start = line_num() + 1
    except csv.Error as exc:
        if str(exc).startswith("field larger than field limit"):
            too_long = f"a cell longer than {MAX_CELL:,} characters"
            raise ContactsError(f"{source}:{start}: {too_long}") from exc
        raise ContactsError(f"{source}:{line_num() + 1}: unreadable CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ContactsError(
            f"{source}: near line {line_num() + 1}: not UTF-8 text; save it as 'CSV UTF-8'"
        ) from exc


def _header(reader: Iterator[list[str]], source: str) -> Layout:
    line_num = _line_counter(reader)
    for cells in _guarded(reader, source, line_num):
        if any(cell.strip() for cell in cells):
            return layout(cells, f"{source}:{line_num()}")
    raise ContactsError(f"{source}: empty file; expected a header row with a 'phone' column")


# --- the import -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did. ``invalid``/``warnings`` hold the first MAX_PROBLEMS of each."""

    rows: int
    imported: int
    updated: int
    invalid: tuple[RowProblem, ...]
    invalid_total: int
    warnings: tuple[RowProblem, ...]
    warnings_total: int
    duplicates_in_file: int
    group: str | None


@dataclass(slots=True)
class _Tally:
    group: str | None
    rows: int = 0
    imported: int = 0
    updated: int = 0
    duplicates: int = 0
    invalid: list[RowProblem] = field(default_factory=list)
    invalid_total: int = 0
    warnings: list[RowProblem] = field(default_factory=list)
    warnings_total: int = 0

    def add(self, batch: Prepared) -> None:
        self.rows += batch.rows
        self.duplicates += batch.duplicates
        self.invalid_total += len(batch.invalid)
        self.warnings_total += len(batch.warnings)
        self.invalid.extend(batch.invalid[: MAX_PROBLEMS - len(self.invalid)])
        self.warnings.extend(batch.warnings[: MAX_PROBLEMS - len(self.warnings)])

    def report(self) -> ImportReport:
        return ImportReport(
            rows=self.rows,
            imported=self.imported,
            updated=self.updated,
            invalid=tuple(self.invalid),
            invalid_total=self.invalid_total,
            warnings=tuple(self.warnings),
            warnings_total=self.warnings_total,
            duplicates_in_file=self.duplicates,
            group=self.group,
        )


async def import_contacts(
    conn: asyncpg.Connection,
    source: Path | TextIO,
    *,
    group: str | None,
    region: str | None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
    name: str | None = None,
) -> ImportReport:
    """Import contacts from a CSV file (see the module docstring for the rules); ``name``
    is the file's name in messages when ``source`` is a stream."""
    region = check_region(region)
    group = _group_name(group)
    with _opened(source, name) as (stream, name):
        reader = _reader(stream, name)
        where = _header(reader, name)
        tally = _Tally(group)
        await conn.execute(SQL_CREATE_STAGING)
        try:
            group_id = await conn.fetchval(SQL_ENSURE_GROUP, group) if group else None
            since = await conn.fetchval(SQL_NOW)
            batches = _batches(reader, name, batch_size)
            async with aclosing(_prepared(batches, where, region)) as prepared:
                async for batch in prepared:
                    await _apply(conn, batch, group_id, since, tally)
                    if progress is not None:
                        progress(tally.rows)
        finally:
            if not conn.is_closed():
                await conn.execute(SQL_DROP_STAGING)
    report = tally.report()
    log.info(
        "imported contacts from %s: %d rows, %d new, %d updated, %d invalid, %d repeated",
        name, report.rows, report.imported, report.updated, report.invalid_total,
        report.duplicates_in_file, extra={"group": group},
    )  # fmt: skip
    return report


def _group_name(group: str | None) -> str | None:
    if group is None:
        return None
    if not group.strip():
        raise ContactsError("a group name cannot be empty")
    return group.strip()


async def _apply(
    conn: asyncpg.Connection, batch: Prepared, group_id: int | None, since: datetime, tally: _Tally
) -> None:
    tally.add(batch)
    if not batch.records:
        return
    async with conn.transaction():
        await conn.execute(SQL_CLEAR_STAGING)
        await conn.copy_records_to_table("audience_import_stage", records=batch.records)
        counts = await conn.fetchrow(SQL_APPLY_BATCH, group_id, since)
    tally.imported += counts["inserted"]
    tally.updated += counts["updated"]
    tally.duplicates += counts["repeated"]


async def _prepared(
    batches: Iterator[list[tuple[int, list[str]]]], where: Layout, region: str | None
) -> AsyncGenerator[Prepared, None]:
    """Prepared batches in file order. The next batch is read and prepared in a thread
    while the caller loads this one, so parsing overlaps PostgreSQL's work."""

    def step() -> Prepared | None:
        rows = next(batches, None)
        return None if rows is None else prepare_batch(rows, where, region)

    upcoming = asyncio.ensure_future(asyncio.to_thread(step))
    try:
        while (batch := await asyncio.shield(upcoming)) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(step))
            yield batch
    finally:
        # the thread reads the file: let it finish before the file is closed
        await asyncio.wait([upcoming])
        if not upcoming.cancelled():
            upcoming.exception()  # the error that stopped the import is the one to report


# --- suppressions and groups ---------------------------------------------------------


async def suppress(
    conn: asyncpg.Connection, phone: str, *, reason: str | None, source: str, channel: str = "*"
) -> bool:
    """Opt ``phone`` (E.164) out of ``channel``; True if it was not suppressed there yet."""
    _require_e164(phone)
    added = await conn.fetchval(SQL_SUPPRESS, phone, channel, reason, source)
    if added:
        log.info("suppressed %s on %s", mask(phone), channel, extra={"source": source})
    return bool(added)


async def unsuppress(conn: asyncpg.Connection, phone: str, *, channel: str = "*") -> bool:
    """Lift the suppression of ``phone`` on ``channel`` ('*': all); True if one was lifted."""
    _require_e164(phone)
    status = await conn.execute(SQL_UNSUPPRESS, phone, channel)
    lifted = str(status) != "DELETE 0"
    if lifted:
        log.info("unsuppressed %s on %s", mask(phone), channel)
    return lifted


async def is_suppressed(conn: asyncpg.Connection, phone: str, *, channel: str = "*") -> bool:
    """Whether a message to ``phone`` on ``channel`` is blocked by a suppression."""
    return bool(await conn.fetchval(SQL_IS_SUPPRESSED, phone, channel))


def _require_e164(phone: str) -> None:
    if not _E164.fullmatch(phone):
        raise ContactsError(f"not an E.164 number: {mask(phone)!r}")


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group and how many contacts are in it."""

    name: str
    members: int
    created_at: datetime


async def list_groups(conn: asyncpg.Connection) -> list[GroupInfo]:
    """Every group by name, with its member count."""
    rows = await conn.fetch(SQL_LIST_GROUPS)
    return [GroupInfo(row["name"], row["members"], row["created_at"]) for row in rows]
