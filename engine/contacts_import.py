"""Importing contacts from a CSV file into PostgreSQL (``import_contacts``).

How the file is read (header, limits, invalid rows, repeats within the file) is
:mod:`engine.contacts_csv`; numbers are read with :func:`engine.phones.normalise_reason`;
groups and suppressions are :mod:`engine.audience`. Loading:

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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import asyncpg

from engine.contacts_csv import (
    Layout,
    Prepared,
    RowProblem,
    csv_reader,
    opened,
    prepare_batch,
    read_header,
    row_batches,
)
from engine.phones import ContactsError, check_region
from engine.queries import QUERIES

log = logging.getLogger(__name__)

BATCH_SIZE = 10_000
#: invalid rows (and warnings) kept in an ImportReport; the rest are only counted
MAX_PROBLEMS = 1000

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
    with opened(source, name) as (stream, name):
        reader = csv_reader(stream, name)
        where = read_header(reader, name)
        tally = _Tally(group)
        await conn.execute(QUERIES["create_import_stage"])
        try:
            group_id = await conn.fetchval(QUERIES["ensure_group"], group) if group else None
            since = await conn.fetchval(QUERIES["import_started_at"])
            batches = row_batches(reader, name, batch_size)
            async with aclosing(_prepared(batches, where, region)) as prepared:
                async for batch in prepared:
                    await _apply(conn, batch, group_id, since, tally)
                    if progress is not None:
                        progress(tally.rows)
        finally:
            if not conn.is_closed():
                await conn.execute(QUERIES["drop_import_stage"])
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
        await conn.execute(QUERIES["clear_import_stage"])
        await conn.copy_records_to_table("audience_import_stage", records=batch.records)
        counts = await conn.fetchrow(QUERIES["apply_import_batch"], group_id, since)
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
