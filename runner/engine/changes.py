"""Pure rules of an order change (modify in place, or cancel + replace): the prices an order type carries,
the order as a change would leave it (for pre-trade checks) and whether the broker shows a change applied."""

from __future__ import annotations

from decimal import Decimal

from runner.model import Modification, Order, OrderRequest, OrderType

PRICED = frozenset({OrderType.LIMIT, OrderType.SL})  # the types that carry a limit price
TRIGGERED = frozenset({OrderType.SL, OrderType.SL_M})  # the types that carry a trigger price


def prices_for(
    order_type: OrderType, price: Decimal | None, trigger: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """(price, trigger) as an order of ``order_type`` carries them: a MARKET / SL-M order has no limit
    price and a MARKET / LIMIT order no trigger, whatever the order it replaces had."""
    return (price if order_type in PRICED else None, trigger if order_type in TRIGGERED else None)


def modified_request(order: Order, change: Modification) -> OrderRequest:
    """The order as it would stand after ``change`` (quantity = the new total), for pre-trade checks."""
    new_type = change.order_type or order.order_type
    price, trigger = prices_for(
        new_type, change.price or order.price, change.trigger_price or order.trigger_price
    )
    return OrderRequest(
        client_order_id=order.client_order_id,
        instrument=order.instrument,
        side=order.side,
        quantity=change.quantity if change.quantity is not None else order.quantity,
        order_type=new_type,
        product=order.product,
        validity=order.validity,
        price=price,
        trigger_price=trigger,
        tag=order.tag,
    )


def applied(order: Order, change: Modification) -> bool:
    if change.price is not None and order.order_type is not OrderType.MARKET and order.price != change.price:
        return False
    if change.trigger_price is not None and order.trigger_price != change.trigger_price:
        return False
    if change.quantity is not None and order.quantity != change.quantity:
        return False
    return change.order_type is None or order.order_type is change.order_type
