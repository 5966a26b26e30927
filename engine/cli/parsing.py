"""Helpers that every command group's parser uses: a group, a command, ``--yes``."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from engine.cli.context import Handler

#: what ``add_subparsers`` returns: where a group adds its commands
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: --raw of report and export: engine.untrusted explains the neutralising it turns off
RAW = "CSV cells exactly as stored (no ' before cells a spreadsheet would run as formulas)"


def group(sub: Commands, name: str, help_text: str) -> Commands:
    """A command group (``engine NAME COMMAND``)."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def command(sub: Commands, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """One command run by ``handler``."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def yes(parser: argparse.ArgumentParser) -> None:
    """The ``--yes`` of a destructive command."""
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask for confirmation (needed when stdin is not a terminal)",
    )
