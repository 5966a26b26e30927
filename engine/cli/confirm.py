"""The question a destructive command asks before it changes anything.

Every destructive command (``contacts remove``, ``groups remove-members``, ``groups
delete``, ``campaign archive``) says what it will do and asks ``[y/N]`` when stdin is a
terminal; ``--yes`` skips the question. With stdin not a terminal (a script, a pipe) and
no ``--yes`` it changes nothing and exits 1 with one line, so that a script never
deletes by accident.
"""

from __future__ import annotations

import argparse
import sys

from engine.errors import EngineError


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
