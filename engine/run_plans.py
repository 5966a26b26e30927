"""A run's plan: what expansion compiles once per run before it decides any recipient.

:func:`plan_run` compiles the campaign's templates (its variants' too), its prices (a
route's per account), the A/B split and the tracked links' plan into a
:class:`~engine.message_rows.RunPlan`, which then turns each recipient into a row.
:func:`template_names` says which variables the templates read, so renders can be cached
by them. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from engine import links
from engine.message_rows import RunPlan
from engine.templates import compile_message, variables
from engine.variants import Split

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.spec import Campaign


def plan_run(
    run_id: int,
    campaign: Campaign,
    config: EngineConfig,
    *,
    winner: str | None = None,
    whole_audience: bool = False,
) -> RunPlan:
    """Compile templates and prices for one run (once, not per recipient); ``winner``: the
    winning variant, for the expansion of the rest of the audience after a winner test;
    ``whole_audience``: everyone by weight, test or not (previews and test sends)."""
    router = config.router(campaign.provider)
    # a route's rows name its first account until each recipient's is chosen
    first = config.accounts_of(campaign.provider)[0]
    account = config.providers[first]
    plan = RunPlan(
        run_id=run_id,
        campaign=campaign,
        account=first,
        sender=campaign.sender or account.sender,
        prices=config.price_table(first),
        templates=compile_message(campaign.message),
        zone_name=campaign.schedule.timezone,
        names=template_names(campaign),
        router=router,
        route_prices={a: config.price_table(a) for a in router.accounts} if router else {},
    )
    plan.split = Split.of(campaign, winner)
    if plan.split is not None and whole_audience:
        plan.split = replace(plan.split, test_share=None, winner=None)
    plan.variant_templates = {
        v.name: compile_message(v)  # type: ignore[arg-type]  # same body and locales
        for v in campaign.message.variants
    }
    plan.link_plan = links.LinkPlan.of(campaign, config.webhooks.public_url)
    return plan


def template_names(campaign: Campaign) -> tuple[str, ...] | None:
    """The variables a campaign's templates use, or None when rendering must not be cached.

    The ``random`` filter makes a render depend on more than its variables.
    """
    message = campaign.message
    sources = [message.body or "", *message.locales.values()]
    for variant in message.variants:
        sources += [variant.body, *variant.locales.values()]
    if any("random" in source for source in sources):
        return None
    return tuple(sorted(set().union(*(variables(source) for source in sources))))
