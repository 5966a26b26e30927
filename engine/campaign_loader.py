"""The campaign-file loader: the one part of campaign handling that reads files.

:func:`load_campaign` reads one YAML file and either returns a :class:`~engine.spec.Campaign`
or raises :class:`~engine.errors.CampaignFileError` listing every problem of the file, in
file order, each as ``path:line:col: field.path: what is wrong`` (the column is the value's;
positions come from :mod:`engine.yamldoc`). :func:`load_paths` loads files and folders.

- A campaign file may be at most 1 MiB (:data:`MAX_FILE_BYTES`); YAML aliases and nesting
  are limited as :mod:`engine.yamldoc` describes.
- Files are read and the audience file's existence is checked; nothing else touches the disk,
  the database or the network.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from engine import yamldoc
from engine.errors import CampaignFileError
from engine.spec import CROSS_CHECKS, Campaign, Checks


def load_campaign(
    path: Path,
    *,
    accounts: Collection[str] | None = None,
    default_region: str | None = None,
) -> Campaign:
    """Read and validate one campaign file; raise CampaignFileError listing every problem."""
    return _load(path, _context(path, accounts, default_region))[1]


def load_paths(
    paths: Iterable[Path],
    *,
    accounts: Collection[str] | None = None,
    default_region: str | None = None,
) -> tuple[list[tuple[Path, Campaign]], list[str]]:
    """Load files and folders (their ``*.yaml``/``*.yml``): the good campaigns, all problems."""
    problems: list[str] = []
    loaded: list[tuple[Path, Campaign]] = []
    first: dict[str, Path] = {}
    for path in _campaign_files(paths, problems):
        try:
            doc, campaign = _load(path, _context(path, accounts, default_region))
        except CampaignFileError as exc:
            problems.extend(exc.problems)
            continue
        if campaign.name in first:
            message = f"campaign {campaign.name!r} is already defined in {first[campaign.name]}"
            problems.append(doc.problem(("name",), message))
            continue
        first[campaign.name] = path
        loaded.append((path, campaign))
    return loaded, problems


def _context(path: Path, accounts: Collection[str] | None, region: str | None) -> Checks:
    names = None if accounts is None else frozenset(accounts)
    return Checks(path.parent.resolve(), names, region and region.upper(), positioned=True)


def _campaign_files(paths: Iterable[Path], problems: list[str]) -> list[Path]:
    files: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(
                child
                for child in path.iterdir()
                if child.suffix in (".yaml", ".yml")
                and not child.name.startswith(".")
                and child.is_file()
            )
            if not found:
                problems.append(f"{path}: no campaign files (*.yaml) in this folder")
            files.update((child.resolve(), child) for child in found)
        elif path.exists():
            files.setdefault(path.resolve(), path)
        else:
            problems.append(f"{path}: no such file or folder")
    return list(files.values())


def _load(path: Path, checks: Checks) -> tuple[yamldoc.Document, Campaign]:
    doc = _read(path)
    problems = _cross_problems(doc)
    try:
        campaign = Campaign.model_validate(doc.data, context=checks)
    except ValidationError as exc:
        problems = doc.validation_problems(exc) + problems
    if problems:
        raise CampaignFileError(_in_file_order(path, problems))
    return doc, campaign


#: the largest campaign file read (a campaign is a page of YAML; the audience goes in a CSV)
MAX_FILE_BYTES = 1024 * 1024


def _read(path: Path) -> yamldoc.Document:
    try:
        doc = yamldoc.load(path, _read_text(path))
    except yaml.YAMLError as exc:
        raise CampaignFileError([yamldoc.yaml_error(path, exc)]) from exc
    except UnicodeDecodeError as exc:
        raise CampaignFileError([f"{path}: not a UTF-8 text file"]) from exc
    except OSError as exc:
        raise CampaignFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    if not isinstance(doc.data, Mapping):
        what = "a mapping with name, provider, schedule, audience and message"
        raise CampaignFileError([doc.problem((), f"expected a campaign: {what}")])
    return doc


def _read_text(path: Path) -> str:
    """The file's text, reading no more than the cap (``/dev/zero`` is endless)."""
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CampaignFileError(
            [f"{path}: the file is larger than 1 MiB, the limit for a campaign file"]
        )
    return data.decode("utf-8")


def _cross_problems(doc: yamldoc.Document) -> list[str]:
    problems: list[str] = []
    for key, check in CROSS_CHECKS.items():
        section = doc.data.get(key)
        if isinstance(section, Mapping):
            problems += [doc.problem((key, *loc), message) for loc, message in check(section)]
    return problems


def _in_file_order(path: Path, problems: list[str]) -> list[str]:
    prefix = len(f"{path}:")

    def position(problem: str) -> tuple[int, int]:
        found = re.match(r"(\d+):(\d+):", problem[prefix:])
        return (int(found[1]), int(found[2])) if found else (0, 0)

    return sorted(dict.fromkeys(problems), key=position)
