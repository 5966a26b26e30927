"""Reading a contacts CSV file: its header's layout and its rows, checked and normalised.

No database: :func:`prepare_batch` runs in a worker thread while PostgreSQL loads the
batch before (:mod:`engine.contacts_import`), and ``engine contacts remove --file``
reads numbers with the same header rules (:mod:`engine.contacts`).

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
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson

from engine.contact_fields import CONTACT_FIELDS
from engine.phones import ContactsError, normalise_reason

#: columns a header may have; more is an error (a contacts file needs a handful)
MAX_COLUMNS = 1000
#: characters in one line of the file, and (csv's own limit) in one cell
MAX_LINE = 1 << 20
MAX_CELL = csv.field_size_limit()
#: a contact's own columns an import fills (the number has a column of its own)
PROFILE_FIELDS = tuple(name for name in CONTACT_FIELDS if name != "phone")

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
    fields: tuple[int, ...]  # positions of PROFILE_FIELDS
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
    reserved = set(CONTACT_FIELDS)
    return Layout(
        phone=position["phone"],
        fields=tuple(position.get(name, len(names)) for name in PROFILE_FIELDS),
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
def opened(source: Path | TextIO, name: str | None) -> Iterator[tuple[TextIO, str]]:
    """The file (or the caller's stream) to read, and its name for messages."""
    if not isinstance(source, Path):
        yield source, name or str(getattr(source, "name", "CSV"))
        return
    try:
        stream = source.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ContactsError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    with stream:
        yield stream, str(source)


def csv_reader(stream: TextIO, source: str) -> Iterator[list[str]]:
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


def row_batches(
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


def read_header(reader: Iterator[list[str]], source: str) -> Layout:
    """The layout of the first non-blank row, or ContactsError when there is none."""
    line_num = _line_counter(reader)
    for cells in _guarded(reader, source, line_num):
        if any(cell.strip() for cell in cells):
            return layout(cells, f"{source}:{line_num()}")
    raise ContactsError(f"{source}: empty file; expected a header row with a 'phone' column")
