"""The adapters stand alone: loading them (or the webhook handler) loads no simulator part."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import sys
import engine.config, engine.providers, engine.webhooks
print("\\n".join(m for m in sys.modules
                 if m.startswith("engine.simulator") or m.endswith("_sim") or "sim_accounts" in m))
"""


def test_adapters_do_not_load_the_simulator() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=os.environ, check=True
    )
    assert result.stdout.split() == []
