"""A broker wrapper for position tests: rows without the figures some brokers do not report."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal

from runner.brokers.base import ForwardingBroker
from runner.model import Position


class Unreported(ForwardingBroker):
    """A broker whose position rows carry no average price or realised P&L (as ODIN's): the views must
    compute them from the day's orders."""

    async def positions(self) -> Sequence[Position]:
        return [
            dataclasses.replace(
                p,
                average_price=Decimal(0),
                realized_pnl=Decimal(0),
                average_price_reported=False,
                realized_pnl_reported=False,
            )
            for p in await self.inner.positions()
        ]
