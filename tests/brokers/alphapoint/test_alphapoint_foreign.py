"""A foreign order record of an unmapped side in the APEX order history (entered elsewhere on the
account) does not break reads on the account; see helpers.relogin.check_foreign_rows."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.relogin import T0, alpha, check_foreign_rows

from runner.clock import VirtualClock
from runner.ids import numeric_id


def record(order_id: int, side: str, client: int) -> dict[str, Any]:
    return {"OrderId": order_id, "Side": side, "OrderType": "Limit", "OrderState": "Working",
            "ClientOrderId": client, "Instrument": 1, "Account": 9, "Quantity": 5, "OrigQuantity": 5,
            "QuantityExecuted": 0, "Price": 990}


async def test_foreign_rows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with alpha(VirtualClock(T0), monkeypatch) as s:
        await check_foreign_rows(
            s, lambda r: s.sim.inject_foreign_row(9, r),
            odd=record(990001, "Sideways", 0), odd_id="990001",
            readable=record(990002, "Buy", 0), readable_id="990002",
            own_shaped=record(990003, "Sideways", numeric_id("rnforeign1")), caplog=caplog)
