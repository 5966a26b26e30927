"""Each adapter against the simulator playing its provider, over real HTTP: an expired
credential (401 in the provider's own error shape) or an empty account (402) is the
account's problem (``Outcome.ACCOUNT`` with its reason), never the message's; ``check``
says the same and succeeds once the credential is renewed."""

from __future__ import annotations

import aiohttp
import pytest

from engine.config import EngineConfig
from engine.providers import adapter_for
from engine.providers.base import AccountReason, CheckFailed, Outbound, Outcome
from engine.simulator import FamilySettings, SimulatorSettings, serve
from engine.simulator.accounts import ACCOUNTS as SWITCH
from tests.e2e.test_all_providers import ACCOUNTS, FAMILY


@pytest.mark.parametrize("name", list(ACCOUNTS))
async def test_refused_credentials_and_credit_are_the_accounts_problem(
    session: aiohttp.ClientSession, name: str
) -> None:
    family = FAMILY[name]
    settings = SimulatorSettings(families={family: FamilySettings(webhook_url=None)})
    async with await serve(settings, "127.0.0.1", 0) as sim:
        config = EngineConfig.model_validate(
            {"providers": {name: {**ACCOUNTS[name], "base_url": sim.url}}}
        )
        adapter = adapter_for(
            name, config.providers[name], session, public_url="http://127.0.0.1:9"
        )
        message = Outbound(message_id=1, to="+27821234567", body="hello")
        assert (await adapter.send([message]))[0].outcome is Outcome.ACCEPTED
        assert await adapter.check()

        for switch, reason, status in (
            ({"valid": False}, AccountReason.AUTH, 401),
            ({"credit": False}, AccountReason.CREDIT, 402),
        ):
            sim.app[SWITCH].set(family, **switch)
            (result,) = await adapter.send([Outbound(2, "+27821234568", "hello")])
            assert (result.outcome, result.reason) == (Outcome.ACCOUNT, reason)
            with pytest.raises(CheckFailed, match=f"HTTP {status}") as failed:
                await adapter.check()
            assert failed.value.reason is reason
            sim.app[SWITCH].set(family, valid=True, credit=True)

        assert f"{name}: GET " in await adapter.check()
