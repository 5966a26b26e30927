"""Provider adapters, one module per provider, and the simulator of all of them.

:data:`AnyAccount` is the tagged union of every account type and
:data:`ACCOUNT_TYPES` maps each ``type:`` value to its account model; the config uses
them so that an account block is validated against its own type's keys.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from engine.providers.base import AccountBase
from engine.providers.simulator import SimulatorAccount

_ACCOUNT_MODELS: tuple[type[AccountBase], ...] = (SimulatorAccount,)

ACCOUNT_TYPES: dict[str, type[AccountBase]] = {
    model.model_fields["type"].default: model for model in _ACCOUNT_MODELS
}

# A one-member union cannot carry a discriminator; the tag is added with the second type.
AnyAccount = Annotated[Union[SimulatorAccount], Field()]  # noqa: UP007

__all__ = ["ACCOUNT_TYPES", "AnyAccount", "SimulatorAccount"]
