"""The strict pydantic base model every configuration and campaign model derives from.

Pure (pydantic only), so that the campaign model and the provider accounts share it without
the campaign model importing the adapters.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
