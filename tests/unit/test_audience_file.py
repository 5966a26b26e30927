"""``audience.file`` reaches only files inside the campaign file's folder (issue 18, break 2).

Run as users run it: ``engine campaign validate`` on a campaign file in a folder of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli

SECRET = "s3cr3t-value-never-printed"
GOOD_CSV = "phone,first_name\n+27825550001,Ann\n"


def campaign(folder: Path, audience_file: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "promo.yaml"
    path.write_text(
        "name: promo\nprovider: simulator\nschedule:\n  now: true\n"
        f"audience:\n  file: {audience_file}\nmessage:\n  body: Hi\n"
    )
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["campaign", "validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _secret_in_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENGINE_TEST_SECRET", SECRET)
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "audience_file",
    [
        "/proc/self/environ",
        "/etc/passwd",
        "../outside.csv",
        "../../outside.csv",
        "sub/../../outside.csv",
        "~/outside.csv",
    ],
)
def test_a_file_outside_the_campaign_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], audience_file: str
) -> None:
    (tmp_path / "outside.csv").write_text(GOOD_CSV)
    path = campaign(tmp_path / "team" / "campaigns", audience_file)
    (tmp_path / "team" / "outside.csv").write_text(GOOD_CSV)

    code, out, err = validate(path, capsys)

    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:6:9: audience.file: audience file {audience_file!r} is outside")
    assert err.count("\n") == 1
    assert SECRET not in err and "root:" not in err


def test_a_symlink_is_followed_first_then_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "outside.csv").write_text(GOOD_CSV)
    folder = tmp_path / "campaigns"
    path = campaign(folder, "list.csv")
    (folder / "list.csv").symlink_to(tmp_path / "outside.csv")

    code, _, err = validate(path, capsys)

    assert code == 1
    assert "audience file 'list.csv' is outside the campaign file's folder" in err


def test_environ_through_a_symlink_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "campaigns"
    path = campaign(folder, "env.csv")
    (folder / "env.csv").symlink_to("/proc/self/environ")

    code, _, err = validate(path, capsys)

    assert code == 1 and SECRET not in err
    assert "is outside the campaign file's folder" in err


def test_subfolders_and_symlinks_inside_the_folder_are_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "campaigns"
    (folder / "lists" / "march").mkdir(parents=True)
    (folder / "lists" / "march" / "vip.csv").write_text(GOOD_CSV)
    (folder / "current.csv").symlink_to(Path("lists") / "march" / "vip.csv")
    for written in ("lists/march/vip.csv", "current.csv", "lists/../current.csv"):
        path = campaign(folder, written)
        code, out, err = validate(path, capsys)
        assert (code, out, err) == (0, f"{path}: ok (promo)\n", ""), written
