"""A foreign order row of an unmapped prcTp/trnsTp in the Kotak book (a manual order from Kotak's own
terminal) does not break reads on the account; see helpers.relogin.check_foreign_rows."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.relogin import T0, check_foreign_rows, kotak

from runner.clock import VirtualClock
from runner.model import OrderStatus


def row(number: str, prc_tp: str, trns_tp: str, gui: str) -> dict[str, Any]:
    return {"nOrdNo": number, "GuiOrdId": gui, "exSeg": "nse_cm", "trdSym": "IDEA-EQ", "prcTp": prc_tp,
            "trnsTp": trns_tp, "qty": 5, "fldQty": 0, "ordSt": "open", "prc": "9.5", "prod": "MIS"}


async def test_foreign_rows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with kotak(VirtualClock(T0), monkeypatch) as s:
        ucc = next(iter(s.sim.users))
        await check_foreign_rows(
            s, lambda r: s.sim.inject_foreign_row(ucc, r),
            odd=row("990001", "ZZ", "B", ""), odd_id="990001",
            readable=row("990002", "L", "B", "manual-7"), readable_id="990002",
            own_shaped=row("990003", "L", "X", "rn" + "a" * 16), caplog=caplog)


async def test_unreadable_row_of_an_order_we_sent_comes_back_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with kotak(VirtualClock(T0), monkeypatch) as s:
        await s.broker.connect()
        request = s.order("rnforeign2")
        await s.broker.place(request)
        s.sim.inject_foreign_row(next(iter(s.sim.users)), row("990004", "L", "X", "rnforeign2"))
        odd = await s.broker.get_order_by_broker_id("990004")
        assert (odd.status, odd.client_order_id, odd.side, odd.raw_status) == (
            OrderStatus.UNKNOWN, "rnforeign2", request.side, "open")
