"""``engine contacts``: import, list, show, remove, suppress, unsuppress.

Numbers are masked (``+27******567``) unless ``--unmasked``; ``contacts remove`` asks
first (:mod:`engine.cli.confirm`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from engine import audience, contacts
from engine.cli.confirm import confirm
from engine.cli.context import Context, number
from engine.cli.output import cell, print_table
from engine.cli.parsing import Commands, command, group, yes
from engine.contacts_import import import_contacts
from engine.errors import EngineError
from engine.phones import mask


def _progress_bar() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(rows: int) -> None:
        sys.stderr.write(f"\r  {rows:,} rows imported")
        sys.stderr.flush()

    return show


async def contacts_import(ctx: Context, args: argparse.Namespace) -> int:
    """Import contacts from CSV into an optional group."""
    path = Path(args.file)
    if not path.is_file():
        raise EngineError(f"{path}: no such file")
    region = args.region or ctx.config.default_region
    async with ctx.connection() as conn:
        report = await import_contacts(
            conn, path, group=args.group, region=region, progress=_progress_bar()
        )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(
        f"{report.rows} rows: {report.imported} new, {report.updated} updated, "
        f"{report.invalid_total} invalid, {report.duplicates_in_file} repeated in the file"
        + (f"; group {report.group}" if report.group else "")
    )
    for problem in report.invalid:
        print(f"{path}:{problem.line}: invalid: {problem.raw!r}: {problem.reason}")
    for problem in report.warnings:
        print(f"{path}:{problem.line}: warning: {problem.raw!r}: {problem.reason}")
    hidden = report.invalid_total - len(report.invalid)
    if hidden:
        print(f"... and {hidden} more invalid rows")
    return 0


async def contacts_suppress(ctx: Context, args: argparse.Namespace) -> int:
    """Opt a number out of every campaign."""
    phone = number(ctx, args.number, args.region)
    async with ctx.connection() as conn:
        added = await audience.suppress(
            conn, phone, reason=args.reason, source="cli", channel=args.channel
        )
    print(f"{phone} suppressed" if added else f"{phone} was already suppressed")
    return 0


async def contacts_unsuppress(ctx: Context, args: argparse.Namespace) -> int:
    """Lift a number's opt-out."""
    phone = number(ctx, args.number, args.region)
    async with ctx.connection() as conn:
        removed = await audience.unsuppress(conn, phone, channel=args.channel)
    print(f"{phone} unsuppressed" if removed else f"{phone} was not suppressed")
    return 0


def _shown(phone: str, args: argparse.Namespace) -> str:
    return phone if args.unmasked else mask(phone)


def _name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


async def contacts_list(ctx: Context, args: argparse.Namespace) -> int:
    """Contacts of a group or with attribute values, masked unless --unmasked."""
    filters = contacts.parse_filters(args.attr)
    async with ctx.connection() as conn:
        page = await contacts.list_contacts(
            conn, group=args.group, attributes=filters, limit=args.limit
        )
    print_table(
        ["phone", "name", "locale", "timezone", "groups", "attributes", "opted out"],
        [
            (
                _shown(c.phone, args),
                _name(c.first_name, c.last_name),
                c.locale,
                c.timezone,
                ",".join(c.groups) or None,
                c.attributes or None,
                "yes" if c.suppressed else None,
            )
            for c in page.contacts
        ],
    )
    if page.total > len(page.contacts):
        print(f"{len(page.contacts)} of {page.total} contacts shown (--limit N for more)")
    else:
        print(f"{page.total} contacts")
    return 0


async def contacts_show(ctx: Context, args: argparse.Namespace) -> int:
    """One contact: fields, attributes, groups, opt-outs and latest messages."""
    phone = contacts.numbers_from_args([args.number], args.region or ctx.config.default_region)[0]
    async with ctx.connection() as conn:
        detail = await contacts.contact_detail(conn, phone)
    c = detail.contact
    for label, value in (
        ("phone", _shown(c.phone, args)),
        ("name", _name(c.first_name, c.last_name)),
        ("locale", c.locale),
        ("timezone", c.timezone),
        ("groups", ", ".join(c.groups) or None),
        ("added", detail.created_at),
        ("updated", detail.updated_at),
    ):
        print(f"{label + ':':<10} {cell(value)}")
    for key, value in sorted(c.attributes.items()):
        print(f"  {key}: {value}")
    print("\nopt-outs:")
    print_table(
        ["channel", "reason", "source", "since"],
        [(s["channel"], s["reason"], s["source"], s["created_at"]) for s in detail.suppressions],
    )
    print(f"\nlatest messages (up to {contacts.RECENT_MESSAGES}):")
    print_table(
        ["when", "campaign", "run", "kind", "status", "detail"],
        [
            (m["created_at"], m["campaign"], m["run_id"], m["kind"], m["status"], m["error_detail"])
            for m in detail.recent
        ],
    )
    return 0


async def contacts_remove(ctx: Context, args: argparse.Namespace) -> int:
    """Delete contacts by number or by group; their messages and opt-outs stay."""
    if bool(args.numbers) == bool(args.group):
        raise EngineError("give numbers, or --group NAME (not both)")
    kept = "their messages and opt-outs are kept"
    async with ctx.connection() as conn:
        if args.group:
            size = await contacts.group_size(conn, args.group)
            confirm(
                f"Remove the {size} contacts of group {args.group!r} (from every group; {kept})?",
                args,
            )
            removed = await contacts.remove_contacts_of_group(conn, args.group)
            print(f"removed {removed} contacts; group {args.group!r} is now empty")
            return 0
        phones = contacts.numbers_from_args(args.numbers, args.region or ctx.config.default_region)
        confirm(f"Remove {len(phones)} contact(s) ({kept})?", args)
        found = await contacts.remove_contacts(conn, phones)
    print(f"removed {len(found)} contact(s)")
    _not_found(phones, found, "no contact")
    return 0


def _not_found(asked: Sequence[str], found: Sequence[str], what: str) -> None:
    missing = [p for p in asked if p not in set(found)]
    if missing:
        print(f"{what}: {', '.join(missing)}")


def add_commands(sub: Commands) -> None:
    """``engine contacts ...``."""
    people = group(sub, "contacts", "contacts: import, list, show, remove, suppress, ...")
    imp = command(people, "import", contacts_import, "import contacts from a CSV file")
    imp.add_argument("file")
    imp.add_argument("--group", help="add the imported contacts to this group")
    imp.add_argument("--region", metavar="CC", help="region for numbers without +country")
    for name, handler, text in (
        ("suppress", contacts_suppress, "opt a number out"),
        ("unsuppress", contacts_unsuppress, "lift an opt-out"),
    ):
        cmd = command(people, name, handler, text)
        cmd.add_argument("number")
        cmd.add_argument("--region", metavar="CC")
        cmd.add_argument("--channel", default="*", help="one channel only (default: all)")
        if name == "suppress":
            cmd.add_argument("--reason")
    lst = command(people, "list", contacts_list, "list contacts (numbers masked)")
    lst.add_argument("--group", metavar="NAME", help="members of this group only")
    lst.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attribute or field value to match (repeatable)",
    )
    lst.add_argument("--limit", type=int, default=50, help="contacts to show (default 50)")
    lst.add_argument("--unmasked", action="store_true", help="show whole phone numbers")
    show = command(
        people, "show", contacts_show, "one contact: fields, groups, opt-outs, latest messages"
    )
    show.add_argument("number")
    show.add_argument("--region", metavar="CC")
    show.add_argument("--unmasked", action="store_true", help="show the whole phone number")
    rm = command(
        people, "remove", contacts_remove, "delete contacts (their messages and opt-outs are kept)"
    )
    rm.add_argument("numbers", nargs="*", metavar="NUMBER")
    rm.add_argument("--group", metavar="NAME", help="every contact of this group")
    rm.add_argument("--region", metavar="CC")
    yes(rm)
