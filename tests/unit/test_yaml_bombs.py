"""YAML bombs and oversized files: one clear line naming the file and line (issue 18, break 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli
from engine.campaign_loader import load_campaign
from engine.config import parse_config
from engine.errors import CampaignFileError, ConfigError

LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
CAMPAIGN = """\
name: ok
provider: simulator
schedule: {now: true}
audience: {groups: [all]}
message: {body: "Hi"}
"""


def load(tmp_path: Path, text: str) -> CampaignFileError:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CampaignFileError) as err:
        load_campaign(path)
    assert len(err.value.problems) == 1
    return err.value


def test_billion_laughs_in_a_campaign_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    err = load(tmp_path, LAUGHS)
    assert err.problems[0].startswith(f"{tmp_path / 'c.yaml'}:5:")
    assert "alias *d expands" in err.problems[0]


def test_a_recursive_alias_is_refused_naming_the_line(tmp_path: Path) -> None:
    err = load(tmp_path, "name: &n [x, *n]\n")
    assert err.problems[0] == f"{tmp_path / 'c.yaml'}:1:14: invalid YAML: alias *n refers to itself"


def test_a_recursive_mapping_alias_is_refused(tmp_path: Path) -> None:
    err = load(tmp_path, "a: &m\n  b: *m\n")
    assert "alias *m refers to itself" in err.problems[0]


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    err = load(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than" in err.problems[0]


def test_a_campaign_file_over_the_size_cap_is_refused_naming_it(tmp_path: Path) -> None:
    err = load(tmp_path, CAMPAIGN + "#" * (1024 * 1024) + "\n")
    assert err.problems[0] == (
        f"{tmp_path / 'c.yaml'}: the file is larger than 1 MiB, the limit for a campaign file"
    )


@pytest.mark.parametrize("value", ["2026-13-45", "!!timestamp ''", "!!int x", "!!float x"])
def test_a_value_yaml_cannot_construct_is_a_positioned_error(tmp_path: Path, value: str) -> None:
    err = load(tmp_path, CAMPAIGN + f"description: {value}\n")
    assert err.problems[0].startswith(f"{tmp_path / 'c.yaml'}:6:14: invalid YAML: ")


def test_a_character_yaml_does_not_allow_is_one_line(tmp_path: Path) -> None:
    err = load(tmp_path, CAMPAIGN + "description: a\x00b\n")
    assert err.problems[0] == (
        f"{tmp_path / 'c.yaml'}: invalid YAML: unacceptable character #x0000: special "
        "characters are not allowed (character 114 of the file)"
    )


def test_small_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.replace("[all]", "&g [all]") + "vars: {groups: *g}\n")
    assert load_campaign(path).vars == {"groups": ["all"]}


def test_billion_laughs_in_engine_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(tmp_path / "engine.yaml", LAUGHS, {})
    assert str(err.value).startswith(f"{tmp_path / 'engine.yaml'}:5:")
    assert "alias *d expands" in str(err.value)


def test_a_recursive_alias_in_engine_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="alias \\*p refers to itself"):
        parse_config(tmp_path / "engine.yaml", "providers: &p {x: *p}\n", {})


def test_engine_yaml_anchors_still_work(tmp_path: Path) -> None:
    text = "opt_out_keywords: &stop [STOP, HALT]\nopt_in_keywords: *stop\n"
    config = parse_config(tmp_path / "engine.yaml", text, {})
    assert config.opt_in_keywords == ("STOP", "HALT")


def test_engine_validate_prints_one_line_for_a_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no engine.yaml: the default configuration
    path = tmp_path / "bomb.yaml"
    path.write_text(LAUGHS)
    code = cli.main(["campaign", "validate", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert f"{path}:5:" in err
