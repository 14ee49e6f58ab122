"""``no limits: block`` is a warning for playbooks that can open positions, not for cancel-only ones."""

from __future__ import annotations

import pytest

from runner.playbook.validate import validate_text

HEAD = "version: 1\nname: t\ntimezone: Asia/Kolkata\nsteps:\n"
PLACE = "  - {kind: place, id: buy, instrument: {exchange: NSE, symbol: RELIANCE}, side: BUY, quantity: 1}\n"
CANCEL = "  - {kind: cancel, id: cxl, all_open: {exchange: [NSE]}}\n"
SQUARE = "  - {kind: square_off, id: flat, filter: {exchange: [NSE]}}\n"


def _limits_warnings(text: str) -> list[str]:
    report = validate_text(text, "t.yaml")
    assert report.ok, [d.message for d in report.errors]
    return [d.message for d in report.warnings if "limits" in d.message]


@pytest.mark.parametrize(
    ("steps", "warned"), [(PLACE, True), (CANCEL, False), (SQUARE, False), (CANCEL + PLACE, True)]
)
def test_limits_warning_only_where_orders_are_sent(steps: str, warned: bool) -> None:
    assert bool(_limits_warnings(HEAD + steps)) is warned
