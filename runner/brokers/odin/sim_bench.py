"""Bench hook for the ODIN simulator: an in-process :class:`runner.brokers.odin.sim.OdinSim` with one
connected adapter per user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from runner.brokers.faults import FaultPlan
from runner.brokers.odin.sim import OdinSim, start
from runner.brokers.odin.sim_book import SimUser


@asynccontextmanager
async def connected(
    n_accounts: int, *, faults: FaultPlan | None = None, transport: str | None = None,
    orders_per_second: float = 1000.0, **options: Any,
) -> AsyncIterator[tuple[OdinSim, list[Any]]]:
    """Bench hook: an in-process sim with ``n_accounts`` users and one connected adapter per user.

    Orders go to the default master (e.g. ``Instrument("NSE", "RELIANCE")``). Secrets are set in this
    process's environment (bench only)."""
    from runner.brokers.odin.client import create

    users = [SimUser(f"BENCH{i:03d}", "pw", "key", second_auth="PAN0000000", user_code=f"BN{i:03d}")
             for i in range(n_accounts)]
    async with start(faults=faults, users=users, **options) as sim:
        brokers = []
        for u in users:
            account = sim.account(f"odin-{u.user_id}", u, options={"http_transport": transport} if transport
                                  else {}, rate_limit={"orders_per_second": orders_per_second, "burst": 10})
            broker = create(account, master=sim.master)
            await broker.connect()
            brokers.append(broker)
        try:
            yield sim, brokers
        finally:
            for b in brokers:
                await b.close()
