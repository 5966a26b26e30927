"""Tracked links and A/B variants in the reports: ``engine report``'s tables and the chart
page's click step. Read from the views of migration 0012 (``link_outcomes``,
``variant_outcomes``, ``message_clicks``) and ``ab_tests``.

A run's detailed report gains, only where they apply:

- ``links``: per variant and link, messages, delivered, unique clickers, clicks by people,
  clicks by link-preview bots, click-through rate (unique clickers / delivered) and the
  median and 95th percentile seconds from delivery to the first click;
- ``variants``: per variant, recipients, accepted, delivered, delivery rate, clickers,
  clicks, click-through rate and cost;
- ``winner``: the A/B test's winner, how it was chosen (``by``), its rate and when; before
  the decision, when it is due.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from engine import reports
from engine.queries import QUERIES
from engine.report_charts import Step
from engine.report_output import LABELS, cell

LINK_COLUMNS = (
    "variant",
    "link",
    "messages",
    "delivered",
    "unique_clickers",
    "clicks",
    "bot_clicks",
    "click_through_rate",
    "median_seconds_to_click",
    "p95_seconds_to_click",
)
VARIANT_COLUMNS = (
    "variant",
    "recipients",
    "accepted",
    "delivered",
    "delivery_rate",
    "clickers",
    "clicks",
    "click_through_rate",
    "cost",
)
WINNER_COLUMNS = ("winner", "by", "rate", "test_share", "decide_at", "decided_at")


async def run_tables(conn: asyncpg.Connection, run_id: int) -> tuple[reports.Table, ...]:
    """The links, variants and winner tables of one run (those that apply)."""
    tables = []
    links = await conn.fetch(QUERIES["report_link_outcomes"], run_id)
    if links:
        tables.append(
            reports.Table("links", "tracked links", LINK_COLUMNS, _rows(links, LINK_COLUMNS))
        )
    variants = await conn.fetch(QUERIES["report_variant_outcomes"], run_id)
    if variants:
        tables.append(
            reports.Table(
                "variants", "A/B variants", VARIANT_COLUMNS, _rows(variants, VARIANT_COLUMNS)
            )
        )
    test = await conn.fetchrow(QUERIES["ab_test_get"], run_id)
    if test is not None:
        figures: dict[str, Any] = test["figures"] or {}
        row = (
            test["winner"],
            test["by"],
            figures.get("rate"),
            test["test_share"],
            test["decide_at"],
            test["decided_at"],
        )
        tables.append(reports.Table("winner", "A/B winner", WINNER_COLUMNS, (row,), record=True))
    return tuple(tables)


async def page_tables(
    conn: asyncpg.Connection, run_id: int
) -> tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...]:
    """The same tables for the chart page, as text (headers labelled as in the text form)."""
    tables = []
    for table in await run_tables(conn, run_id):
        headers = tuple(LABELS.get(c, c) for c in table.columns)
        rows = tuple(
            tuple(cell(c, v) for c, v in zip(table.columns, row, strict=True)) for row in table.rows
        )
        if table.record:  # one record: a row per figure
            headers, rows = ("", ""), tuple(zip(headers, rows[0], strict=True)) if rows else ()
        tables.append((table.title, headers, rows))
    return tuple(tables)


def _rows(records: list[asyncpg.Record], columns: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(r[c] for c in columns) for r in records)


async def with_clicks(
    conn: asyncpg.Connection, run_id: int, funnel: tuple[Step, ...]
) -> tuple[Step, ...]:
    """The funnel with a ``clicked`` step after ``delivered`` when the run has tracked links.

    Clicked: recipients with at least one click by a person (bots are not counted).
    """
    if not funnel or not await conn.fetchval(QUERIES["run_has_links"], run_id):
        return funnel
    clicked = int(await conn.fetchval(QUERIES["report_run_clicks"], run_id))
    steps = list(funnel)
    at = next((i for i, s in enumerate(steps) if s.label == "delivered"), len(steps) - 1)
    delivered = steps[at].messages
    lost = (("did not click", delivered - clicked),) if delivered > clicked else ()
    steps.insert(at + 1, Step("clicked", clicked, lost))
    return tuple(steps)
