"""``engine groups``: list, remove-members, delete (contacts are always kept)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import audience, contacts
from engine.cli.confirm import confirm
from engine.cli.context import Context
from engine.cli.output import print_table
from engine.cli.parsing import Commands, command, group, yes
from engine.errors import EngineError
from engine.phones import normalise


async def groups_list(ctx: Context, args: argparse.Namespace) -> int:
    """List groups and their members."""
    async with ctx.connection() as conn:
        groups = await audience.list_groups(conn)
    print_table(
        ["group", "members", "created"], [(g.name, g.members, g.created_at) for g in groups]
    )
    return 0


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
        confirm(
            f"Remove {len(phones)} number(s) from group {args.name!r} (the contacts are kept)?",
            args,
        )
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
            effect = (
                "it will no longer exclude these contacts"
                if use.excludes
                else "it will no longer reach these contacts through it"
            )
            print(f"warning: campaign {use.campaign!r} uses group {args.name!r}: {effect}")
        confirm(f"Delete group {args.name!r} ({size} members; the contacts are kept)?", args)
        await contacts.delete_group(conn, args.name)
    print(f"group {args.name!r} deleted ({size} memberships; contacts kept)")
    return 0


def add_commands(sub: Commands) -> None:
    """``engine groups ...``."""
    groups = group(sub, "groups", "contact groups")
    command(groups, "list", groups_list, "list groups and their sizes")
    rmm = command(
        groups,
        "remove-members",
        groups_remove_members,
        "take numbers out of a group (contacts are kept)",
    )
    rmm.add_argument("name")
    rmm.add_argument(
        "items", nargs="+", metavar="FILE|NUMBER", help="numbers, or CSV files with a phone column"
    )
    rmm.add_argument("--region", metavar="CC")
    yes(rmm)
    delete = command(groups, "delete", groups_delete, "delete a group (its contacts are kept)")
    delete.add_argument("name")
    yes(delete)
