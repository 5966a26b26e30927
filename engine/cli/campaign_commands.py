"""``engine campaign``: validate, preview, apply, list, send, runs, test, archive.

Pause, resume and cancel are in :mod:`engine.cli.control_commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import campaign_loader, campaigns, control, overview
from engine.campaign_preview import Preview, Sample, preview_campaign
from engine.cli import control_commands
from engine.cli.confirm import confirm
from engine.cli.context import Context, number
from engine.cli.output import cell, print_table
from engine.cli.parsing import Commands, command, group, yes
from engine.errors import CampaignFileError
from engine.spec import Campaign
from engine.untrusted import printable_lines


def _load(ctx: Context, paths: Sequence[str]) -> list[tuple[Path, Campaign]]:
    loaded, problems = campaign_loader.load_paths(
        [Path(p) for p in paths],
        accounts=ctx.config.provider_names(),
        default_region=ctx.config.default_region,
    )
    if problems:
        raise CampaignFileError(problems)
    return loaded


async def campaign_validate(ctx: Context, args: argparse.Namespace) -> int:
    """Check campaign files; no database needed."""
    loaded, problems = campaign_loader.load_paths(
        [Path(p) for p in args.paths],
        accounts=ctx.config.provider_names(),
        default_region=ctx.config.default_region,
    )
    for path, campaign in loaded:
        print(f"{path}: ok ({campaign.name})")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


async def campaign_apply(ctx: Context, args: argparse.Namespace) -> int:
    """Store or update campaigns (all files must validate first)."""
    loaded = _load(ctx, args.paths)
    async with ctx.connection() as conn:
        for path, campaign in loaded:
            applied = await campaigns.apply_campaign(conn, campaign, path, ctx.config)
            await control.wake_daemons(conn, "tick")
            when = f", next run {cell(applied.next_run_at)}" if applied.next_run_at else ""
            print(f"{applied.name}: {applied.action}{when}")
            if applied.file_report is not None:
                report = applied.file_report
                print(f"  audience file: {report.rows} rows, {report.invalid_total} invalid")
    return 0


async def campaign_preview(ctx: Context, args: argparse.Namespace) -> int:
    """Render samples and totals for a campaign file against the database."""
    [(_, campaign)] = _load(ctx, [args.file])
    async with ctx.connection() as conn:
        preview = await preview_campaign(
            conn, campaign, ctx.config, limit=args.limit, skipped=args.skipped
        )
    _print_preview(preview)
    if campaign.provider in ctx.config.routes:
        print(f"per account (route {campaign.provider}, every account up):")
        for account, (sends, cost) in sorted(preview.by_account.items()):
            print(f"  {account}: {sends} messages, {cost} credits")
    return 0


def _print_preview(preview: Preview) -> None:
    for sample in preview.samples:
        print_sample(sample)
    queued = preview.statuses.get("queued", 0)
    print(f"recipients: {preview.recipients}   to send: {queued}")
    for status, count in sorted(preview.statuses.items()):
        if status != "queued":
            print(f"  {status}: {count}")
    print(
        f"segments: {preview.segments}   estimated cost: {preview.cost} credits"
        + (f" (budget {preview.budget})" if preview.budget is not None else "")
    )
    if preview.budget is not None and preview.cost > preview.budget:
        print("  over budget: a run would not start")
    if preview.saved_segments:
        print(
            f"short links saved {preview.saved_segments} segments ({preview.saved_credits} credits)"
        )
    if preview.ucs2_messages:
        chars = ", ".join(f"{c!r} x{n}" for c, n in preview.ucs2_chars.most_common(10))
        print(f"UCS-2 messages: {preview.ucs2_messages}, because of {chars}")
        if preview.smart_saves:
            print(f"  encoding: smart would save {preview.smart_saves} segments")
    print_notable(preview)


async def campaign_list(ctx: Context, args: argparse.Namespace) -> int:
    """Campaigns with their next run and last run's outcome."""
    async with ctx.connection() as conn:
        rows = await overview.campaign_list(conn, archived=args.all)
    print_table(
        [
            "campaign",
            "status",
            "next run",
            "last run",
            "run status",
            "estimated cost",
            "cost of accepted messages",
            "counts",
        ],
        [
            (
                r["name"],
                r["status"],
                r["next_run_at"],
                r["scheduled_for"],
                r["run_status"],
                r["estimated_cost"],
                r["cost"],
                r["counts"] or None,
            )
            for r in rows
        ],
    )
    return 0


async def campaign_send(ctx: Context, args: argparse.Namespace) -> int:
    """Create a run of the campaign now."""
    async with ctx.connection() as conn:
        run_id = await campaigns.create_run_now(conn, args.name)
        await control.wake_daemons(conn, "tick")
    print(f"run {run_id} of {args.name} created; a running daemon expands and sends it")
    return 0


async def campaign_runs(ctx: Context, args: argparse.Namespace) -> int:
    """A campaign's runs, newest first."""
    async with ctx.connection() as conn:
        runs = await overview.campaign_runs(conn, args.name, args.limit)
    print_table(
        [
            "run",
            "kind",
            "scheduled for",
            "status",
            "estimated cost",
            "cost of accepted messages",
            "counts",
            "reason",
        ],
        [
            (
                r["id"],
                r["kind"],
                r["scheduled_for"],
                r["status"],
                r["estimated_cost"],
                r["cost"],
                r["live_counts"] or None,
                r["reason"],
            )
            for r in runs
        ],
    )
    return 0


async def campaign_test(ctx: Context, args: argparse.Namespace) -> int:
    """Queue the campaign for one number as a test run."""
    phone = number(ctx, args.to)
    async with ctx.connection() as conn:
        sent = await campaigns.create_test_send(conn, args.name, phone, ctx.config)
    print(f"message {sent.message_id} (run {sent.run_id}): {sent.status}")
    shown = sent.body if sent.body is not None else sent.detail
    print(f"    {printable_lines(shown or '')}")
    return 0 if sent.status == "queued" else 1


async def campaign_archive(ctx: Context, args: argparse.Namespace) -> int:
    """Stop a campaign's future firings and hide it from the list; history stays."""
    async with ctx.connection() as conn:
        await campaigns.campaign_row(conn, args.name)
        confirm(
            f"Archive campaign {args.name!r} (no more firings; its runs and messages are kept)?",
            args,
        )
        archived = await campaigns.archive_campaign(conn, args.name)
    if not archived:
        print(f"{args.name}: already archived")
        return 0
    print(
        f"{args.name}: archived; hidden from 'engine campaign list' (--all shows it); "
        "apply its file again to bring it back"
    )
    return 0


def print_notable(preview: Preview) -> None:
    """The preview's samples per locale and encoding, its longest message, and skips."""
    notable = preview.notable
    for title, samples in (
        ("one per locale", sorted(notable.by_locale.items())),
        ("one per encoding", sorted(notable.by_encoding.items())),
        ("longest message", [("longest", notable.longest)] if notable.longest else []),
    ):
        if samples:
            print(f"\n{title}:")
            for _, sample in samples:
                print_sample(sample)
    skipped = sum(n for status, n in preview.statuses.items() if status != "queued")
    if skipped:
        print(f"\nskipped ({len(notable.skipped)} of {skipped} shown):")
        for sample in notable.skipped:
            print(f"{sample.phone}  {sample.status}: {sample.detail or '-'}")


def print_sample(sample: Sample) -> None:
    """One rendered sample: who, locale, status, encoding, size and cost, then the text."""
    label = f"{sample.variant} " * bool(sample.variant) + (sample.locale or "default")
    print(
        f"{sample.phone}  [{label}]  {sample.status}  "
        f"{sample.encoding or '-'}  {sample.segments or 0} seg  {sample.cost or 0} credits"
    )
    shown = sample.text if sample.text is not None else sample.detail
    print(f"    {printable_lines(shown or '')}")


def add_commands(sub: Commands) -> None:
    """``engine campaign ...``."""
    campaign = group(sub, "campaign", "campaigns: validate, preview, apply, list, ...")
    for name, handler, text in (
        ("validate", campaign_validate, "check campaign files (no database needed)"),
        ("apply", campaign_apply, "store or update campaigns from files"),
    ):
        command(campaign, name, handler, text).add_argument("paths", nargs="+", metavar="PATH")
    preview = command(campaign, "preview", campaign_preview, "rendered samples, totals, cost")
    preview.add_argument("file")
    preview.add_argument("--limit", type=int, default=5, help="samples to show (default 5)")
    preview.add_argument(
        "--skipped",
        type=int,
        default=10,
        metavar="N",
        help="skipped recipients to show (default 10)",
    )
    command(campaign, "list", campaign_list, "campaigns, next run and last outcome").add_argument(
        "--all", action="store_true", help="archived campaigns too"
    )
    archive = command(
        campaign,
        "archive",
        campaign_archive,
        "stop a campaign's firings and hide it (history is kept)",
    )
    archive.add_argument("name")
    yes(archive)
    command(campaign, "send", campaign_send, "create a run now").add_argument("name")
    runs = command(campaign, "runs", campaign_runs, "a campaign's runs and their counts")
    runs.add_argument("name")
    runs.add_argument("--limit", type=int, default=20)
    test = command(campaign, "test", campaign_test, "send the campaign to one number")
    test.add_argument("name")
    test.add_argument("--to", required=True, metavar="NUMBER")
    control_commands.add_commands(campaign)
