"""Which file ``audience.file`` may name, and opening exactly that file.

A campaign file is written by marketing staff and applied by a process that holds every
provider secret, so its ``audience.file`` must not reach the machine's other files
(``/proc/self/environ``, ``/etc/passwd``, ``../../secrets.csv``, a symlink to any of them).

The rule: the path, relative to the campaign file's folder, must resolve (symlinks
followed first, then checked) to a regular file inside that folder or one of its
subfolders. A symlink is fine when its target is inside too.

:func:`resolve_inside` applies the rule when the campaign file is validated, and the
validated campaign keeps the resolved absolute path. :func:`opened` opens that path for
reading and checks again at the moment of opening, so a file swapped for a symlink, a
FIFO or a device after validation is refused: the path must still contain no symlink,
the file is opened without following one and without blocking, and what was opened must
be a regular file and the very file the path names.

Errors name the path as written, never anything read from the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from io import BufferedReader
from pathlib import Path

from engine.errors import EngineError


class AudienceFileError(EngineError, ValueError):
    """An audience file is outside the campaign's folder, missing, or not a regular file.

    A ValueError too, so a campaign file's validation reports it at the field's line."""


def resolve_inside(folder: Path, value: Path) -> Path:
    """``value`` (relative to ``folder``) resolved, if it is a regular file inside ``folder``."""
    root = folder.resolve()
    path = (root / value.expanduser()).resolve()
    if not path.is_relative_to(root):
        raise AudienceFileError(
            f"audience file {str(value)!r} is outside the campaign file's folder {root}; "
            "put it in that folder or a subfolder"
        )
    if not path.is_file():
        raise AudienceFileError(f"audience file not found: {path}")
    return path


@contextmanager
def opened(path: Path) -> Iterator[BufferedReader]:
    """The validated audience file at ``path``, opened for reading, checked once more."""
    if not path.is_absolute() or os.path.realpath(path) != str(path):
        raise AudienceFileError(f"audience file {path} changed since it was checked")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise AudienceFileError(f"audience file {path}: cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as stream:
        _same_regular_file(stream, path)
        yield stream


def _same_regular_file(stream: BufferedReader, path: Path) -> None:
    found = os.fstat(stream.fileno())
    if not stat.S_ISREG(found.st_mode):
        raise AudienceFileError(f"audience file {path} is not a regular file")
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise AudienceFileError(f"audience file {path}: cannot read: {exc.strerror}") from exc
    if (named.st_dev, named.st_ino) != (found.st_dev, found.st_ino):
        raise AudienceFileError(f"audience file {path} changed since it was checked")
