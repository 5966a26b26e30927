"""`engine demo` as a user who installed the package runs it: from any directory.

It brings its example campaigns inside the package, works in a temporary directory of its
own and leaves nothing behind (the embedded PostgreSQL it started included), unless
``--dir`` asks it to keep its database and files there.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.cli import main
from engine.demo import PACKAGED_CAMPAIGNS

REPO = Path(__file__).resolve().parents[2]

# engine demo always runs its own embedded PostgreSQL
pytestmark = [pytest.mark.slow, pytest.mark.embedded_only]


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory straight under /tmp, not pytest's tmp_path.

    The embedded server runs as another user when the tests run as root, and a pytest
    session starting meanwhile makes its /tmp/pytest-of-root private again: a server whose
    data sits under tmp_path then loses its own files.
    """
    path = Path(tempfile.mkdtemp(prefix="engine-demo-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def engine(*args: str, cwd: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m engine ARGS`` in ``cwd``, with no database configured, temp in ``tmpdir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENGINE_CONFIG")}
    env.update(PYTHONPATH=str(REPO), TMPDIR=str(tmpdir))
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def postgres_under(path: Path) -> list[str]:
    """Command lines of the PostgreSQL servers whose data lives under ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if "postgres" in line and str(path) in line:
            found.append(line)
    return found


def test_demo_from_an_empty_directory_leaves_nothing_behind(place: Path) -> None:
    # a temp directory so long that the server's socket cannot sit in its data directory:
    # pgserver then makes a socket directory in the temp directory, which must go too
    cwd, tmpdir = place / "anywhere", place / "a-long-temporary-directory-name-for-demo"
    cwd.mkdir()
    tmpdir.mkdir()
    result = engine("demo", cwd=cwd, tmpdir=tmpdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "applied welcome-now.yaml: created" in result.stdout
    outcome = result.stdout.split("outcome of run", 1)[1]
    assert "  delivered " in outcome
    assert "  queued " not in outcome
    assert "opted out by STOP reply during the campaign: 1" in outcome
    # the simulator clicked tracked links through the daemon's /l/{code}; a winner was sent
    assert "tracked links" in outcome and "A/B variants" in outcome
    assert re.search(r"A/B winner\nwinner +(plain|quick-start)\nby +clicks", outcome)
    # sim-a failed mid-run: its route sent the rest through sim-b, nobody got two messages
    assert "sim-a is down" in result.stdout and "sim-a is back up" in result.stdout
    assert "most to one number: 1\n" in result.stdout
    carried = dict(re.findall(r"^  (sim-[ab]) +(\d+) sent,", outcome, re.M))
    assert set(carried) == {"sim-a", "sim-b"} and all(int(n) > 0 for n in carried.values())
    assert "Nothing was left behind" in result.stdout
    assert list(cwd.iterdir()) == []
    # its temporary directory is gone (pgserver's shared lock file may stay, as it always does)
    assert [p.name for p in tmpdir.iterdir() if p.name != ".lockfile"] == []
    assert postgres_under(tmpdir) == []


def test_demo_dir_keeps_a_project_later_commands_read(place: Path) -> None:
    kept = place / "kept"
    result = engine("demo", "--dir", str(kept), cwd=place, tmpdir=place)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"stay in {kept}" in result.stdout
    assert {p.name for p in kept.iterdir()} == {".engine", "engine.yaml", "contacts.csv"}
    assert postgres_under(kept) == []  # stopped when the demo exited; the data stays
    listed = engine("campaign", "list", cwd=kept, tmpdir=place)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("welcome-now"))
    assert "completed" in row and "delivered=" in row
    # a second demo in its own directory starts afresh: still one run, not two
    again = engine("demo", "--dir", str(kept), cwd=place, tmpdir=place)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "outcome of run 1 (welcome-now)" in again.stdout


def test_demo_refuses_a_directory_that_is_not_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty and not an earlier demo's" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_repository_examples_are_the_packaged_campaigns() -> None:
    """campaigns/ is the package's copy itself (a link), so the two can never drift."""
    assert (REPO / "campaigns").resolve() == PACKAGED_CAMPAIGNS.resolve()
    assert (PACKAGED_CAMPAIGNS / "welcome-now.yaml").is_file()


def test_package_data_covers_every_demo_file() -> None:
    """`pip install .` ships each file the demo needs (globs as setuptools matches them)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["engine"]
    package = REPO / "engine"
    files = [p.relative_to(package).as_posix() for p in PACKAGED_CAMPAIGNS.rglob("*")
             if p.is_file()]  # fmt: skip
    assert "demo_data/campaigns/welcome-now.yaml" in files
    # setuptools' package-data "*" does not cross "/", as fnmatch's does: compare by parts
    uncovered = [
        f for f in files
        if not any(len(f.split("/")) == len(g.split("/")) and all(
            fnmatch.fnmatchcase(a, b) for a, b in zip(f.split("/"), g.split("/"), strict=True)
        ) for g in globs)
    ]  # fmt: skip
    assert uncovered == []
