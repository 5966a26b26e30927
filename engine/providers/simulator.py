"""The engine's own provider simulator (account type ``simulator``).

Used by the demo, the tests and the benchmarks: no credentials, no network beyond
this machine.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from engine.providers.base import AccountBase


class SimulatorAccount(AccountBase):
    """An account on the local simulator."""

    default_base_url: ClassVar[str] = "http://127.0.0.1:8090"

    type: Literal["simulator"] = "simulator"
