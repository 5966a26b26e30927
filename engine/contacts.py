"""Looking at and removing contacts and groups (importing them is ``engine.contacts_import``).

What removal keeps, and why:

- Removing a contact deletes its row and its group memberships. Its messages keep their
  rows, number and status (``contact_id`` becomes NULL), so reports and exports of past
  runs do not change. Its opt-outs stay too: they belong to the number, and a contact
  imported again later must not become reachable by accident.
- Contacts are not removed while a run is expanding (reading its audience): the batch
  it is writing would name a contact that no longer exists. That takes seconds to
  minutes; the command says so and changes nothing.
- Removing members from a group, or deleting a group, never deletes contacts.
- Deleting a group that a campaign still names changes who that campaign reaches (a
  missing group matches nobody; a missing *excluded* group excludes nobody), so
  :func:`campaigns_using_group` lets the command line say so before it asks.

A FILE of numbers is read like an import: a CSV whose header names a ``phone`` column
(same delimiter and header rules); other columns are ignored.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from engine.contacts_csv import layout
from engine.phones import ContactsError, check_region, normalise, normalise_reason
from engine.queries import QUERIES

#: messages shown by ``engine contacts show``
RECENT_MESSAGES = 10


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One contact as listed: its fields, groups and whether it opted out anywhere."""

    phone: str
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    groups: tuple[str, ...]
    suppressed: bool


@dataclass(frozen=True, slots=True)
class ContactPage:
    """The first ``limit`` matching contacts and how many match in all."""

    contacts: list[ContactRow]
    total: int


@dataclass(frozen=True, slots=True)
class ContactDetail:
    """Everything stored about one number."""

    contact: ContactRow
    created_at: datetime
    updated_at: datetime
    suppressions: list[asyncpg.Record]
    recent: list[asyncpg.Record]


def parse_filters(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict, or ContactsError naming the malformed one."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ContactsError(f"--attr takes KEY=VALUE, not {pair!r}")
        found[key.strip()] = value
    return found


async def list_contacts(
    conn: asyncpg.Connection, *, group: str | None, attributes: dict[str, str], limit: int
) -> ContactPage:
    """Contacts matching a group and attribute values, in the order they were added."""
    if group is not None:
        await require_group(conn, group)
    rows = await conn.fetch(QUERIES["list_contacts"], group, attributes, limit)
    return ContactPage(
        [_contact(r, r["suppressed"]) for r in rows], rows[0]["total"] if rows else 0
    )


async def contact_detail(conn: asyncpg.Connection, phone: str) -> ContactDetail:
    """The contact with this number, its opt-outs and its latest messages."""
    row = await conn.fetchrow(QUERIES["contact_detail"], phone)
    if row is None:
        raise ContactsError(f"no contact with number {phone}")
    suppressions = await conn.fetch(QUERIES["suppressions_of_phone"], phone)
    recent = await conn.fetch(QUERIES["recent_messages_of_phone"], phone, RECENT_MESSAGES)
    return ContactDetail(
        _contact(row, bool(suppressions)),
        row["created_at"],
        row["updated_at"],
        suppressions,
        recent,
    )


def _contact(row: asyncpg.Record, suppressed: bool) -> ContactRow:
    return ContactRow(
        row["phone"],
        row["first_name"],
        row["last_name"],
        row["locale"],
        row["timezone"],
        dict(row["attributes"]),
        tuple(row["groups"]),
        suppressed,
    )


async def require_group(conn: asyncpg.Connection, group: str) -> None:
    """ContactsError when there is no group of that name."""
    if not await conn.fetchval(QUERIES["group_exists"], group):
        raise ContactsError(f"no group named {group!r} (see engine groups list)")


async def group_size(conn: asyncpg.Connection, group: str) -> int:
    """How many contacts the group holds (ContactsError when it does not exist)."""
    await require_group(conn, group)
    return int(await conn.fetchval(QUERIES["count_group_members"], group))


async def remove_contacts(conn: asyncpg.Connection, phones: Sequence[str]) -> list[str]:
    """Delete the contacts with these numbers; the numbers that were found."""
    await _refuse_while_expanding(conn)
    rows = await conn.fetch(QUERIES["delete_contacts_by_phone"], list(phones))
    return [r["phone"] for r in rows]


async def remove_contacts_of_group(conn: asyncpg.Connection, group: str) -> int:
    """Delete every contact in the group (the group itself stays, empty)."""
    await require_group(conn, group)
    await _refuse_while_expanding(conn)
    return len(await conn.fetch(QUERIES["delete_contacts_of_group"], group))


async def _refuse_while_expanding(conn: asyncpg.Connection) -> None:
    run = await conn.fetchrow(QUERIES["expanding_run"])
    if run is not None:
        raise ContactsError(
            f"run {run['id']} of campaign {run['name']!r} is reading its "
            "audience; remove contacts once it is sending (see engine status)"
        )


async def remove_members(conn: asyncpg.Connection, group: str, phones: Sequence[str]) -> list[str]:
    """Take these numbers out of the group; the numbers that were members."""
    await require_group(conn, group)
    rows = await conn.fetch(QUERIES["remove_group_members"], group, list(phones))
    return [r["phone"] for r in rows]


async def delete_group(conn: asyncpg.Connection, group: str) -> None:
    """Delete the group and its memberships; its contacts stay."""
    if await conn.fetchval(QUERIES["delete_group"], group) is None:
        raise ContactsError(f"no group named {group!r} (see engine groups list)")


@dataclass(frozen=True, slots=True)
class GroupUse:
    """A campaign that may still fire and names a group."""

    campaign: str
    excludes: bool


async def campaigns_using_group(conn: asyncpg.Connection, group: str) -> list[GroupUse]:
    """Active or paused campaigns whose audience names the group."""
    rows = await conn.fetch(QUERIES["campaigns_using_group"], group)
    return [GroupUse(r["name"], r["excludes"]) for r in rows]


def numbers_from_args(raw: Iterable[str], region: str | None) -> list[str]:
    """Numbers typed on the command line in E.164, or ContactsError naming a bad one."""
    region = check_region(region)
    found = []
    for text in raw:
        phone = normalise(text, region)
        if phone is None:
            raise ContactsError(f"not a valid phone number: {text!r}")
        found.append(phone)
    return list(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class NumbersFile:
    """The valid numbers of a CSV file, and its rows that held none."""

    phones: list[str]
    invalid: list[tuple[int, str, str]]  # line, raw cell, reason


def numbers_from_file(path: Path, region: str | None) -> NumbersFile:
    """The ``phone`` column of a CSV file, normalised like an import."""
    region = check_region(region)
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return _read_numbers(stream, str(path), region)
    except OSError as exc:
        raise ContactsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ContactsError(f"{path}: not a UTF-8 CSV file: {exc}") from exc


def _read_numbers(stream: TextIO, source: str, region: str | None) -> NumbersFile:
    first = stream.readline()
    delimiter = max(",;\t", key=first.count) if first.strip() else ","
    reader = csv.reader(itertools.chain([first], stream), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise ContactsError(f"{source}: empty file; expected a header row with a 'phone' column")
    where = layout(header, source)
    phones, invalid = [], []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        raw = cells[where.phone].strip() if where.phone < len(cells) else ""
        e164, reason = normalise_reason(raw, region)
        if e164 is None:
            invalid.append((reader.line_num, raw, reason or "invalid"))
        else:
            phones.append(e164)
    return NumbersFile(list(dict.fromkeys(phones)), invalid)
