"""The pure modules import nothing that does I/O: checked in a fresh interpreter each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: modules that talk to the network, the database or the adapters (which do both)
IO_MODULES = ("aiohttp", "asyncpg", "engine.providers", "engine.db", "engine.config",
              "engine.queries")
PURE = ("engine.spec", "engine.sms", "engine.pricing", "engine.templates", "engine.timing",
        "engine.message_rows", "engine.strict")


def loaded_by(module: str) -> list[str]:
    """Every module a fresh interpreter holds after importing ``module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_no_io_module(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    io = [name for name in loaded
          if any(name == bad or name.startswith(f"{bad}.") for bad in IO_MODULES)]
    assert io == []
