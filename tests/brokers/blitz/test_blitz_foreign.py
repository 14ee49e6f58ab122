"""A foreign order row of an unmapped type in the Blitz book (placed from Blitz's own terminal) does not
break reads on the account; see helpers.relogin.check_foreign_rows."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.relogin import T0, blitz, check_foreign_rows

from runner.clock import VirtualClock


def row(boid: int, order_type: str, correlation: str) -> dict[str, Any]:
    return {"blitzOrderId": boid, "instrumentId": 1, "exchangeSegment": "NSECM", "instrumentName": "IDEA",
            "orderType": order_type, "orderSide": "Buy", "orderStatus": "New", "orderQuantity": 5,
            "cumulativeQuantity": 0,  # in every order row (seed 000, SDK order fields)
            "orderPrice": "10", "correlationOrderId": correlation, "sequenceNumber": 1,
            "isOrderCompleted": False}


async def test_foreign_rows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with blitz(VirtualClock(T0), monkeypatch) as s:
        await check_foreign_rows(
            s, lambda r: s.sim.inject_foreign_row("Algo123", r),
            odd=row(990001, "Iceberg", ""), odd_id="990001",
            readable=row(990002, "Limit", "manual-7"), readable_id="990002",
            own_shaped=row(990003, "Iceberg", "rn" + "a" * 16), caplog=caplog)
