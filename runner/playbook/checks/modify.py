"""Modify steps: change something, not contradictory changes, quantity in lots, chase on a limit order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink
from runner.playbook.checks.values import number


def check_modify_steps(doc: Doc, sink: Sink) -> None:
    for i, step in enumerate(doc.steps):
        if step["kind"] == "modify":
            _check_modify(doc, sink, ("steps", i), step, i)


def _check_modify(doc: Doc, sink: Sink, path: Path, step: dict[str, Any], i: int) -> None:
    changes: list[str] = [k for k in ("price", "trigger_price", "quantity", "chase") if k in step]
    if step.get("to_market"):
        changes.append("to_market")
    if not changes:
        sink.add(
            path,
            "this modify step changes nothing",
            "give price, trigger_price, quantity, chase or to_market: true",
        )
    if "chase" in step and "price" in step:
        sink.add((*path, "chase"), "give either price or chase, not both", key=True)
    if step.get("to_market") and ("price" in step or "chase" in step):
        sink.add(
            (*path, "to_market"),
            "to_market drops the price; remove price/chase (or use chase.then_market)",
            key=True,
        )
    number(doc, sink, (*path, "price"), step.get("price"), whole=False)
    number(doc, sink, (*path, "trigger_price"), step.get("trigger_price"), whole=False)
    qty = number(doc, sink, (*path, "quantity"), step.get("quantity"), whole=True)
    target = doc.target_order(step["order"], i)
    if qty is not None and target is not None:
        spec = doc.resolve_quiet(target.get("instrument"))
        lot = spec.get("lot_size") if spec else None
        if lot and qty % lot:
            sink.add((*path, "quantity"), f"quantity {qty} is not a multiple of the lot size {lot}")
    if "chase" in step:
        chase = step["chase"]
        number(doc, sink, (*path, "chase", "limit_price"), chase.get("limit_price"), whole=False)
        if target is not None and target.get("type", "MARKET") not in ("LIMIT", "SL"):
            sink.add(
                (*path, "chase"),
                f"chase moves a limit price, but '{step['order']}' is a {target.get('type', 'MARKET')} order",
                "place it as type: LIMIT",
                key=True,
            )
        spec = doc.resolve_quiet(target.get("instrument")) if target else None
        rupees = chase.get("tick")  # ``ticks:`` is whole ticks by construction
        tick_size = spec.get("tick_size") if spec else None
        if tick_size and rupees is not None and Decimal(rupees) % Decimal(tick_size):
            sink.add(
                (*path, "chase", "tick"),
                f"chase tick {rupees} is not a multiple of the tick size {tick_size}",
            )
