"""Command handlers for looking at and removing data: contacts, groups, archiving.

Every destructive command (``contacts remove``, ``groups remove-members``, ``groups
delete``, ``campaign archive``) says what it will do and asks ``[y/N]`` when stdin is a
terminal; ``--yes`` skips the question. With stdin not a terminal (a script, a pipe) and
no ``--yes`` it changes nothing and exits 1 with one line, so that a script never
deletes by accident. Numbers are masked (``+27******567``) unless ``--unmasked``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import campaigns, contacts
from engine.cli import Context, _cell, print_table
from engine.errors import EngineError
from engine.phones import mask, normalise
from engine.untrusted import printable_lines


class NotConfirmed(EngineError):
    """A destructive command was not confirmed; nothing was changed."""


def confirm(question: str, args: argparse.Namespace) -> None:
    """Ask ``question`` on a terminal unless ``--yes``; NotConfirmed when not agreed."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(f"{question} Not confirmed: pass --yes (stdin is not a terminal)")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise NotConfirmed("not confirmed; nothing changed")


def _shown(phone: str, args: argparse.Namespace) -> str:
    return phone if args.unmasked else mask(phone)


def _name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


# --- contacts ----------------------------------------------------------------------------


async def contacts_list(ctx: Context, args: argparse.Namespace) -> int:
    """Contacts of a group or with attribute values, masked unless --unmasked."""
    filters = contacts.parse_filters(args.attr)
    async with ctx.connection() as conn:
        page = await contacts.list_contacts(conn, group=args.group, attributes=filters,
                                            limit=args.limit)
    print_table(["phone", "name", "locale", "timezone", "groups", "attributes", "opted out"],
                [(_shown(c.phone, args), _name(c.first_name, c.last_name), c.locale,
                  c.timezone, ",".join(c.groups) or None, c.attributes or None,
                  "yes" if c.suppressed else None) for c in page.contacts])
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
    for label, value in (("phone", _shown(c.phone, args)),
                         ("name", _name(c.first_name, c.last_name)), ("locale", c.locale),
                         ("timezone", c.timezone), ("groups", ", ".join(c.groups) or None),
                         ("added", detail.created_at), ("updated", detail.updated_at)):
        print(f"{label + ':':<10} {_cell(value)}")
    for key, value in sorted(c.attributes.items()):
        print(f"  {key}: {value}")
    print("\nopt-outs:")
    print_table(["channel", "reason", "source", "since"],
                [(s["channel"], s["reason"], s["source"], s["created_at"])
                 for s in detail.suppressions])
    print(f"\nlatest messages (up to {contacts.RECENT_MESSAGES}):")
    print_table(["when", "campaign", "run", "kind", "status", "detail"],
                [(m["created_at"], m["campaign"], m["run_id"], m["kind"], m["status"],
                  m["error_detail"]) for m in detail.recent])
    return 0


async def contacts_remove(ctx: Context, args: argparse.Namespace) -> int:
    """Delete contacts by number or by group; their messages and opt-outs stay."""
    if bool(args.numbers) == bool(args.group):
        raise EngineError("give numbers, or --group NAME (not both)")
    kept = "their messages and opt-outs are kept"
    async with ctx.connection() as conn:
        if args.group:
            size = await contacts.group_size(conn, args.group)
            confirm(f"Remove the {size} contacts of group {args.group!r} (from every group; "
                    f"{kept})?", args)
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


# --- groups --------------------------------------------------------------------------------


def _numbers(ctx: Context, args: argparse.Namespace) -> list[str]:
    """Numbers from the FILE and NUMBER arguments: an existing file is read as CSV."""
    region = args.region or ctx.config.default_region
    phones: list[str] = []
    for item in args.items:
        path = Path(item)
        if not path.is_file():
            if normalise(item, region) is None and any(ch.isalpha() for ch in item):
                raise EngineError(f"{item}: no such file, and not a phone number")
            phones += contacts.numbers_from_args([item], region)
            continue
        read = contacts.numbers_from_file(path, region)
        phones += read.phones
        for line, raw, reason in read.invalid:
            print(f"{path}:{line}: invalid: {raw!r}: {reason} (skipped)")
    return list(dict.fromkeys(phones))


async def groups_remove_members(ctx: Context, args: argparse.Namespace) -> int:
    """Take numbers (typed, or a CSV's phone column) out of a group; contacts stay."""
    phones = _numbers(ctx, args)
    if not phones:
        raise EngineError("no valid numbers to remove")
    async with ctx.connection() as conn:
        await contacts.require_group(conn, args.name)
        confirm(f"Remove {len(phones)} number(s) from group {args.name!r} "
                "(the contacts are kept)?", args)
        removed = await contacts.remove_members(conn, args.name, phones)
    print(f"removed {len(removed)} of {len(phones)} number(s) from group {args.name!r}")
    if len(removed) < len(phones):
        print(f"{len(phones) - len(removed)} were not members")
    return 0


async def groups_delete(ctx: Context, args: argparse.Namespace) -> int:
    """Delete a group (its contacts stay), warning about campaigns that name it."""
    async with ctx.connection() as conn:
        size = await contacts.group_size(conn, args.name)
        for use in await contacts.campaigns_using_group(conn, args.name):
            effect = ("it will no longer exclude these contacts" if use.excludes
                      else "it will no longer reach these contacts through it")
            print(f"warning: campaign {use.campaign!r} uses group {args.name!r}: {effect}")
        confirm(f"Delete group {args.name!r} ({size} members; the contacts are kept)?", args)
        await contacts.delete_group(conn, args.name)
    print(f"group {args.name!r} deleted ({size} memberships; contacts kept)")
    return 0


# --- campaigns -----------------------------------------------------------------------------


async def campaign_archive(ctx: Context, args: argparse.Namespace) -> int:
    """Stop a campaign's future firings and hide it from the list; history stays."""
    async with ctx.connection() as conn:
        await campaigns.campaign_row(conn, args.name)
        confirm(f"Archive campaign {args.name!r} (no more firings; its runs and messages "
                "are kept)?", args)
        archived = await campaigns.archive_campaign(conn, args.name)
    if not archived:
        print(f"{args.name}: already archived")
        return 0
    print(f"{args.name}: archived; hidden from 'engine campaign list' (--all shows it); "
          "apply its file again to bring it back")
    return 0


def print_notable(preview: campaigns.Preview) -> None:
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


def print_sample(sample: campaigns.Sample) -> None:
    """One rendered sample: who, locale, status, encoding, size and cost, then the text."""
    print(f"{sample.phone}  [{sample.locale or 'default'}]  {sample.status}  "
          f"{sample.encoding or '-'}  {sample.segments or 0} seg  {sample.cost or 0} credits")
    shown = sample.text if sample.text is not None else sample.detail
    print(f"    {printable_lines(shown or '')}")
