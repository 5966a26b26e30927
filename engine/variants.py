"""A/B variants: which variant each recipient gets, and who is in a winner test. Pure.

The split is deterministic: a recipient's place is a hash (SHA-256) of the campaign's name
and the number, so expanding a run again (after a crash, or the rest of the audience after
the winner) gives every recipient the same variant and the same test membership. Two hashes
are used, one for the test share and one for the variant, so the test's split by weight is
as even as the whole audience's.

- Without ``winner``: every recipient gets a variant, in proportion to the weights.
- With ``winner``: the recipients whose test hash falls under ``test_share`` form the test
  and are split by weight; the others get no row until the winner is decided
  (:mod:`engine.winner`); then they, and only they, are expanded with the winning variant.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.spec import Campaign

#: a recipient left out of this expansion (outside the test, or in it after the winner)
LEFT_OUT = "\x00"


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class Split:
    """How one expansion assigns variants.

    ``winner`` is None during the test (or without a winner test); set, the expansion is
    the rest of the audience after the test, all with that variant.
    """

    campaign: str
    names: tuple[str, ...]
    bounds: tuple[float, ...]  # cumulative weights, normalised to end at 1
    test_share: float | None = None
    winner: str | None = None

    @classmethod
    def of(cls, campaign: Campaign, winner: str | None = None) -> Split | None:
        """The split of a campaign with variants (None without)."""
        variants = campaign.message.variants
        if not variants:
            return None
        total = sum(v.weight for v in variants)
        bounds = tuple(b / total for b in accumulate(v.weight for v in variants))
        test = campaign.message.winner
        return cls(
            campaign.name,
            tuple(v.name for v in variants),
            bounds,
            None if test is None else test.test_share,
            winner,
        )

    def in_test(self, phone: str) -> bool:
        """Whether the number belongs to the winner test (always, without a test)."""
        return self.test_share is None or _unit(self.campaign, "test", phone) < self.test_share

    def variant_by_weight(self, phone: str) -> str:
        """The number's variant by weight (what it gets in the test, or without one)."""
        index = bisect_right(self.bounds, _unit(self.campaign, "variant", phone))
        return self.names[min(index, len(self.names) - 1)]

    def assign(self, phone: str) -> str:
        """The number's variant in this expansion, or :data:`LEFT_OUT`."""
        if self.test_share is None:
            return self.variant_by_weight(phone)
        if self.winner is None:
            return self.variant_by_weight(phone) if self.in_test(phone) else LEFT_OUT
        return LEFT_OUT if self.in_test(phone) else self.winner
