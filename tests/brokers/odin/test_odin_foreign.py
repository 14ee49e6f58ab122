"""A foreign order row of an unmapped transaction type in the ODIN book (a manual order from the
broker's own terminal) does not break reads on the account; see helpers.relogin.check_foreign_rows."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.relogin import T0, check_foreign_rows, odin_

from runner.clock import VirtualClock


def row(order_id: str, side: str, tag: str) -> dict[str, Any]:
    return {"order_id": order_id, "exchange": "NSE_EQ", "symbol": "IDEA", "transaction_type": side,
            "order_type": "RL", "total_quantity": 5, "traded_quantity": 0, "status": "PENDING",
            "order_price": "9.5", "order_identifier": tag}


async def test_foreign_rows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with odin_(VirtualClock(T0), monkeypatch) as s:
        await check_foreign_rows(
            s, lambda r: s.sim.inject_foreign_row("SIM1", r),
            odd=row("990001", "SHORT", ""), odd_id="990001",
            readable=row("990002", "BUY", "manual7"), readable_id="990002",
            own_shaped=row("990003", "SHORT", "r" + "a" * 9), caplog=caplog)
