"""The pure modules import nothing that does I/O: checked in a fresh interpreter each.

Each module below is imported alone in a new interpreter; the engine modules and the
third-party packages it pulled in must be within its allowed list. An allowed list names
what the module's concept needs: a new import past it is a design change, so it fails
here and the list (and docs/architecture.md) are updated on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: modules that talk to the network, the database or the adapters (which do both); the
#: simulator is a server. No pure module may load any of them, whatever its allowed list.
IO_MODULES = (
    "aiohttp",
    "asyncpg",
    "engine.providers",
    "engine.simulator",
    "engine.db",
    "engine.config",
    "engine.queries",
)

_PYDANTIC = {
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
}
_JINJA = {"jinja2", "markupsafe"}
_TIMING = {"engine.errors", "engine.phones"}
_TIMING_PACKAGES = {"apscheduler", "tzlocal", "phonenumbers"}
_TEMPLATES = {"engine.errors", "engine.template_limits", "engine.template_sandbox"}
_TEMPLATING = {*_TEMPLATES, "engine.templates"}  # what loading engine.templates brings
_TIMED = {*_TIMING, "engine.timing"}  # what loading engine.timing brings

#: pure module -> (engine modules it may load, third-party packages it may load)
PURE: dict[str, tuple[set[str], set[str]]] = {
    "engine.contact_fields": (set(), set()),
    "engine.strict": (set(), _PYDANTIC),
    "engine.pricing": ({"engine.errors"}, set()),
    "engine.routes": ({"engine.errors", "engine.pricing", "engine.strict"}, _PYDANTIC),
    "engine.sms": ({"engine.errors"}, {"regex"}),
    "engine.phones": ({"engine.errors"}, {"phonenumbers"}),
    "engine.template_limits": ({"engine.errors"}, set()),
    "engine.template_sandbox": ({"engine.errors", "engine.template_limits"}, _JINJA),
    "engine.templates": (_TEMPLATES, _JINJA),
    "engine.timing": (_TIMING, _TIMING_PACKAGES),
    "engine.receipt_rules": ({"engine.status"}, set()),
    "engine.report_output": ({"engine.untrusted"}, {"orjson"}),
    "engine.report_charts": (
        {"engine.report_output", "engine.status", "engine.untrusted"},
        {"orjson"},
    ),
    "engine.message_rows": (
        {
            "engine.contact_fields",
            "engine.copy_text",
            "engine.links",
            "engine.pricing",
            "engine.sms",
            "engine.status",
            "engine.variants",
            *_TEMPLATING,
            *_TIMED,
        },
        {"regex", *_JINJA, *_TIMING_PACKAGES},
    ),
    # the model; engine.audiencefile checks that audience.file exists, and only when the
    # campaign loader passes its Checks (the spec module's docstring says so)
    "engine.spec": (
        {
            "engine.audiencefile",
            "engine.sms",
            "engine.spec_message",
            "engine.strict",
            "engine.values",
            *_TEMPLATING,
            *_TIMED,
        },
        {"regex", *_PYDANTIC, *_JINJA, *_TIMING_PACKAGES},
    ),
    "engine.links": (_TEMPLATING, _JINJA),
    "engine.copy_text": (set(), set()),
    "engine.variants": (set(), set()),
    "engine.spec_message": (
        {"engine.strict", "engine.values", *_TEMPLATING},
        {*_PYDANTIC, *_JINJA},
    ),
    # not pure (it opens the CSV file it is given) but it loads no network or database part
    "engine.contacts_csv": (
        {"engine.contact_fields", "engine.errors", "engine.phones"},
        {"orjson", "phonenumbers"},
    ),
}

_PROBE = """
import json, sys
before = set(sys.modules)
import {module}
new = set(sys.modules) - before
print(json.dumps({{
    "engine": sorted(n for n in new if n.startswith("engine.") and n != "{module}"),
    "third": sorted({{n.split(".")[0] for n in new if not n.startswith(("engine", "_"))
                     and n.split(".")[0] not in sys.stdlib_module_names}}),
    "all": sorted(new),
}}))
"""


def loaded_by(module: str) -> dict[str, list[str]]:
    """The engine modules, third-party packages and all modules importing ``module`` loads."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return loaded


def _is_io(name: str) -> bool:
    return any(name == bad or name.startswith(f"{bad}.") for bad in IO_MODULES)


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_load_no_io_module(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded["all"]
    assert [name for name in loaded["all"] if _is_io(name)] == []


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_load_only_what_they_are_allowed(module: str) -> None:
    engine_allowed, third_allowed = PURE[module]
    loaded = loaded_by(module)
    assert sorted(set(loaded["engine"]) - engine_allowed) == []
    assert sorted(set(loaded["third"]) - third_allowed) == []


def test_no_allowed_list_names_an_io_module() -> None:
    allowed = set().union(*(engines | third for engines, third in PURE.values()))
    assert sorted(name for name in allowed if _is_io(name)) == []
