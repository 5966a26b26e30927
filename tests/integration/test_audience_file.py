"""The audience file is checked again when it is read (issue 18, break 2): a file swapped
for a symlink, a FIFO or another file after validation is refused, and nothing is read."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from engine import campaign_preview, campaigns
from engine.audiencefile import AudienceFileError
from engine.campaign_loader import load_campaign
from engine.config import EngineConfig

CONFIG = EngineConfig()
GOOD_CSV = "phone,first_name\n+27825550001,Ann\n"


def write_campaign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list.csv").write_text(GOOD_CSV)
    path = folder / "promo.yaml"
    path.write_text(
        "name: promo\nprovider: simulator\nschedule:\n  now: true\n"
        "audience:\n  file: list.csv\nmessage:\n  body: Hi\n"
    )
    return path


async def test_a_file_swapped_for_a_symlink_after_validation_is_not_read(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "secret.csv").write_text("phone,password\n+27825559999,hunter2\n")
    path = write_campaign(tmp_path / "campaigns")
    campaign = load_campaign(path)
    listed = tmp_path / "campaigns" / "list.csv"
    listed.unlink()
    listed.symlink_to(tmp_path / "secret.csv")

    with pytest.raises(AudienceFileError, match="changed since it was checked") as caught:
        await campaigns.apply_campaign(conn, campaign, path, CONFIG)

    assert "hunter2" not in str(caught.value)
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_folder_swapped_for_a_symlink_after_validation_is_not_read(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "list.csv").write_text("phone\n+27825559999\n")
    path = write_campaign(tmp_path / "campaigns" / "lists")
    campaign = load_campaign(path)
    (tmp_path / "campaigns" / "lists").rename(tmp_path / "campaigns" / "old")
    (tmp_path / "campaigns" / "lists").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(AudienceFileError, match="changed since it was checked"):
        await campaigns.apply_campaign(conn, campaign, path, CONFIG)
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_fifo_swapped_in_after_validation_does_not_hang_the_apply(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path / "campaigns")
    campaign = load_campaign(path)
    listed = tmp_path / "campaigns" / "list.csv"
    listed.unlink()
    os.mkfifo(listed)

    with pytest.raises(AudienceFileError, match="is not a regular file"):
        await campaigns.apply_campaign(conn, campaign, path, CONFIG)


async def test_the_validated_file_is_imported(conn: asyncpg.Connection, tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "campaigns")
    applied = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    assert applied.file_report is not None and applied.file_report.imported == 1
    preview = await campaign_preview.preview_campaign(conn, load_campaign(path), CONFIG)
    assert preview.recipients == 1


async def test_nul_rows_of_an_audience_file_are_recorded_and_the_rest_applies(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path / "campaigns")
    (tmp_path / "campaigns" / "list.csv").write_text(
        "phone,first_name\n+27825550001,Ann\n+2782555\x000002,Bob\n+27825550003,C\x00y\n"
    )
    applied = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)

    assert applied.file_report is not None
    assert (applied.file_report.imported, applied.file_report.invalid_total) == (1, 2)
    stored = await conn.fetch(
        "SELECT line, raw, reason FROM campaign_invalid_recipients ORDER BY line"
    )
    assert [tuple(r) for r in stored] == [
        (3, "+2782555\ufffd0002", "unstorable character '\\x00' in column phone"),
        (4, "+27825550003", "unstorable character '\\x00' in column first_name"),
    ]
