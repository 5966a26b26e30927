"""``engine campaign preview``: what a campaign would send now, to whom, at what cost.

Every recipient is decided exactly as a run would decide it (the same
:class:`~engine.message_rows.RunPlan`), inside a transaction that is rolled back: the
audience file is imported into its group and the audience read as the expander reads it,
and nothing stays. The :class:`Preview` counts statuses, segments and cost (per account,
for a route), the UCS-2 characters and what smart encoding would save, and what tracked
links' short URLs saved; :class:`Notable` keeps the samples a marketer should see
whatever the audience's order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg

from engine import sms
from engine.campaigns import import_audience_file
from engine.config import EngineConfig
from engine.contacts_csv import RowProblem
from engine.expander import Sources, file_group
from engine.message_rows import Row
from engine.phones import mask
from engine.queries import QUERIES
from engine.run_plans import plan_run
from engine.spec import Campaign
from engine.status import MessageStatus
from engine.timing import SendTiming, utcnow


@dataclass(frozen=True, slots=True)
class Sample:
    """One rendered message as the preview shows it."""

    phone: str
    locale: str | None
    status: str
    text: str | None
    encoding: str | None
    segments: int | None
    cost: Decimal | None
    detail: str | None
    variant: str | None = None

    @classmethod
    def of(cls, row: Row) -> Sample:
        """The sample of one decided row (the number masked)."""
        return cls(mask(row[2]), row[7], row[11], row[6], row[8], row[9], row[10], row[15], row[16])


@dataclass(slots=True)
class Notable:
    """Samples a marketer should see whatever the audience's order: the first message
    of each locale and each encoding, the longest message (most segments, then most
    characters) and the first ``skipped_limit`` recipients that would not be sent to."""

    skipped_limit: int = 10
    by_locale: dict[str, Sample] = field(default_factory=dict)
    by_encoding: dict[str, Sample] = field(default_factory=dict)
    longest: Sample | None = None
    skipped: list[Sample] = field(default_factory=list)

    def note(self, row: Row) -> None:
        """Keep the row's sample where it is the first or longest of its kind."""
        if row[11] != MessageStatus.QUEUED.value:
            if len(self.skipped) < self.skipped_limit:
                self.skipped.append(Sample.of(row))
            return
        locale = f"{row[16] or ''} {row[7] or 'body'}"  # and variant: one of each
        if locale not in self.by_locale:
            self.by_locale[locale] = Sample.of(row)
        if row[8] not in self.by_encoding:
            self.by_encoding[row[8]] = Sample.of(row)
        longest = self.longest
        size = (row[9], len(row[6]))
        if longest is None or size > (longest.segments or 0, len(longest.text or "")):
            self.longest = Sample.of(row)

    def invalid(self, problems: Iterable[RowProblem]) -> None:
        """Skipped rows of the audience file (its line, raw cell masked, and reason)."""
        for problem in problems:
            if len(self.skipped) >= self.skipped_limit:
                return
            self.skipped.append(
                Sample(
                    mask(problem.raw),
                    None,
                    "invalid_number",
                    None,
                    None,
                    None,
                    None,
                    f"file line {problem.line}: {problem.reason}",
                )
            )


@dataclass(slots=True)
class Preview:
    """What a campaign would send now, to whom, and at what cost."""

    samples: list[Sample] = field(default_factory=list)
    notable: Notable = field(default_factory=Notable)
    recipients: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    cost: Decimal = Decimal(0)
    budget: Decimal | None = None
    ucs2_messages: int = 0
    ucs2_chars: Counter[str] = field(default_factory=Counter)
    smart_saves: int = 0
    saved_segments: int = 0  # what tracked links' short URLs saved (engine.links)
    saved_credits: Decimal = Decimal(0)
    #: messages to send and their cost per account (a route splits them: engine.routes)
    by_account: dict[str, tuple[int, Decimal]] = field(default_factory=dict)

    def add(self, row: Row, smart_already: bool) -> None:
        """Count one decided recipient."""
        self.recipients += 1
        status = row[11]
        self.statuses[status] += 1
        if status != MessageStatus.QUEUED.value:
            return
        self.segments += row[9]
        self.cost += row[10]
        sends, cost = self.by_account.get(row[4], (0, Decimal(0)))
        self.by_account[row[4]] = (sends + 1, cost + row[10])
        if row[8] == str(sms.UCS2):
            self._ucs2(row[6], row[9], smart_already)

    def _ucs2(self, body: str, segments: int, smart_already: bool) -> None:
        self.ucs2_messages += 1
        self.ucs2_chars.update(char for _, char in sms.analyze(body).non_gsm)
        if not smart_already:
            self.smart_saves += segments - sms.analyze(body, smart=True).segments


async def preview_campaign(
    conn: asyncpg.Connection,
    campaign: Campaign,
    config: EngineConfig,
    *,
    limit: int = 5,
    batch_size: int = 5000,
    skipped: int = 10,
) -> Preview:
    """Decide every recipient exactly as a run would, inside a transaction rolled back after."""
    preview = Preview(budget=campaign.limits.budget, notable=Notable(skipped))
    plan = plan_run(0, campaign, config, whole_audience=True)  # a winner test's rest too
    smart = campaign.message.encoding == "smart"
    transaction = conn.transaction()
    await transaction.start()
    try:
        invalid = await _preview_file(conn, campaign, config, preview.notable)
        preview.recipients += invalid
        preview.statuses.update({MessageStatus.INVALID_NUMBER.value: invalid} if invalid else {})
        sources = await Sources.resolve(conn, campaign, campaign.name)
        timing = SendTiming(campaign, utcnow())
        async for records in sources.batches(conn, campaign.channel, utcnow(), 0, batch_size):
            for rec in records:
                row = plan.decide(rec, timing, sources.cap_count)
                if row is not None:
                    preview.add(row, smart)
                    preview.notable.note(row)
                    _sample(preview, row, limit)
        duplicates = await sources.duplicates(conn)
        if duplicates:
            preview.statuses[MessageStatus.DUPLICATE.value] = duplicates
        preview.saved_segments, preview.saved_credits = plan.saved_segments, plan.saved_credits
    finally:
        await transaction.rollback()
    return preview


async def _preview_file(
    conn: asyncpg.Connection, campaign: Campaign, config: EngineConfig, notable: Notable
) -> int:
    if campaign.audience.file is None:
        return 0
    group = file_group(campaign.name)
    await conn.execute(QUERIES["clear_group_members"], group)
    report = await import_audience_file(conn, Path(campaign.audience.file), group, config)
    notable.invalid(report.invalid)
    return report.invalid_total


def _sample(preview: Preview, row: Row, limit: int) -> None:
    if len(preview.samples) < limit:
        preview.samples.append(Sample.of(row))
