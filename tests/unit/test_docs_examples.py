"""Every YAML example in the documentation is valid as written.

Each ```yaml block of README.md and docs/*.md is loaded the way the engine reads it: a
campaign file (it has a ``name``) with the campaign loader, in a folder holding the
audience file it names; simulator settings (``default``/``families``) as ``engine
simulator --settings`` reads them; anything else as an ``engine.yaml`` with the config
loader, every ``${VAR}`` it needs set in the environment. An example that is deliberately
partial is preceded by the line ``<!-- docs-example: fragment -->`` (invisible on the page)
and is only parsed as YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import db
from engine.campaign_loader import load_campaign
from engine.config import parse_config
from engine.errors import ConfigError
from engine.simulator import SimulatorSettings

REPO = Path(__file__).resolve().parents[2]
FRAGMENT = "<!-- docs-example: fragment -->"
_VAR = re.compile(r"\$\{(\w+)(:-[^}]*)?\}")
_SIMULATOR_KEYS = set(SimulatorSettings.model_fields)


class Example:
    """One ```yaml block: where it is, its text, and whether it is marked a fragment."""

    def __init__(self, path: Path, line: int, text: str, fragment: bool) -> None:
        self.path, self.line, self.text, self.fragment = path, line, text, fragment

    def __repr__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def yaml_examples(path: Path) -> list[Example]:
    """The ```yaml blocks of one Markdown file."""
    found: list[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() in ("```yaml", "```yml"):
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("```"))
            before = next(
                (lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), ""
            )
            found.append(
                Example(path, start + 1, "\n".join(lines[start:end]) + "\n", before == FRAGMENT)
            )
            index = end
        index += 1
    return found


def all_examples() -> list[Example]:
    """The YAML examples of README.md and every docs page."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    return [example for path in files for example in yaml_examples(path)]


def env_for(text: str) -> dict[str, str]:
    """A value for each ``${VAR}`` without a default: long enough for any secret."""
    return {
        name: f"example-value-for-{name.lower()}"
        for name, default in _VAR.findall(text)
        if not default
    }


def kind(data: Any) -> str:
    """``campaign``, ``simulator`` or ``config``: what a user would save the example as."""
    if isinstance(data, dict) and "name" in data:
        return "campaign"
    if isinstance(data, dict) and data and set(data) <= _SIMULATOR_KEYS:
        return "simulator"
    return "config"


def load_example(example: Example, folder: Path) -> str:
    """Load one example as the engine would; return its kind."""
    data = yaml.safe_load(example.text)
    what = kind(data)
    if what == "campaign":
        path = folder / "campaigns" / "example.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example.text, encoding="utf-8")
        audience_file = (data.get("audience") or {}).get("file")
        if audience_file:
            csv = path.parent / audience_file
            csv.parent.mkdir(parents=True, exist_ok=True)
            csv.write_text("phone\n+27821234567\n", encoding="utf-8")
        load_campaign(path)
    elif what == "simulator":
        SimulatorSettings.model_validate(data)
    else:
        path = folder / "engine.yaml"
        path.write_text(example.text, encoding="utf-8")
        parse_config(path, example.text, env_for(example.text))
    return what


@pytest.mark.parametrize("example", all_examples(), ids=repr)
def test_every_yaml_example_loads_as_written(example: Example, tmp_path: Path) -> None:
    if example.fragment:
        yaml.safe_load(example.text)
        return
    load_example(example, tmp_path)


def test_the_docs_show_each_kind_of_example() -> None:
    kinds = {
        kind(yaml.safe_load(example.text)) for example in all_examples() if not example.fragment
    }
    assert kinds == {"campaign", "simulator", "config"}


def ops_config_example() -> Example:
    """The annotated engine.yaml of the ops page's configuration section."""
    page = REPO / "docs" / "ops.md"
    section = page.read_text(encoding="utf-8").split("## Configuration: `engine.yaml`", 1)[1]
    section = section.split("\n## ", 1)[0]
    return next(example for example in yaml_examples(page) if example.text in section)


def test_the_configuration_example_needs_no_database_url(tmp_path: Path) -> None:
    # DATABASE_URL is optional: unset, the example uses the embedded server; set, it wins
    example = ops_config_example()
    path = tmp_path / "engine.yaml"
    path.write_text(example.text, encoding="utf-8")
    env = env_for(example.text)
    assert "DATABASE_URL" not in env
    config = parse_config(path, example.text, env)
    assert config.database_url is None or not config.database_url.get_secret_value()
    assert db.uses_embedded(config, env)
    with_url = parse_config(path, example.text, {**env, "DATABASE_URL": "postgresql://h/db"})
    assert not db.uses_embedded(with_url, {})


def test_the_walkthrough_files_agree_with_each_other() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    examples = {
        kind(yaml.safe_load(e.text)): yaml.safe_load(e.text)
        for e in yaml_examples(REPO / "README.md")
    }
    config, simulator, campaign = examples["config"], examples["simulator"], examples["campaign"]
    ((account, settings),) = config["providers"].items()
    exported = re.search(r"export SIM_WEBHOOK_SECRET=(\S+)", readme)
    assert exported and settings["webhook_secret"] == "${SIM_WEBHOOK_SECRET}"
    assert simulator["default"]["webhook_secret"] == exported.group(1)
    assert len(exported.group(1)) >= 16
    listen = config["webhooks"]["listen"]
    assert simulator["default"]["webhook_url"] == f"http://{listen}/webhooks/{account}"
    port = settings["base_url"].rsplit(":", 1)[1]
    assert f"engine simulator --port {port} --settings simulator.yaml" in readme
    assert campaign["provider"] == account
    assert (
        "engine contacts import contacts.csv --group " + campaign["audience"]["groups"][0] in readme
    )


def test_a_broken_example_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```yaml\nproviders:\n  x:\n    type: nosuch\n```\n\n"
        f"{FRAGMENT}\n\n```yaml\nrate: 10/s\n```\n",
        encoding="utf-8",
    )
    broken, fragment = yaml_examples(page)
    assert not broken.fragment and fragment.fragment
    with pytest.raises(ConfigError, match="type must be one of"):
        load_example(broken, tmp_path)
