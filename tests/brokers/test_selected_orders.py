"""runner.brokers.selected_orders: some of the day's orders by client id, from one book read."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from helpers.engine import RELIANCE

from runner.brokers.base import ForwardingBroker
from runner.brokers.selected_orders import orders_of
from runner.model import Order, OrderRequest, OrderStatus, Side


def _order(cid: str) -> Order:
    return Order.from_request(OrderRequest(cid, RELIANCE, Side.BUY, 1), OrderStatus.OPEN, broker_order_id=cid)


class Book:
    """A broker double reading its book: ``orders`` is the whole book, ``orders_of`` picks rows."""

    name = "book"
    capabilities: frozenset[Any] = frozenset()

    def __init__(self, *cids: str) -> None:
        self.book = [_order(c) for c in cids]
        self.reads: list[str] = []

    async def orders(self) -> Sequence[Order]:
        self.reads.append("orders")
        return self.book


class PickingBook(Book):
    async def orders_of(self, client_order_ids: Collection[str]) -> Sequence[Order]:
        self.reads.append("orders_of")
        return [o for o in self.book if o.client_order_id in client_order_ids]


async def test_an_adapter_that_picks_rows_is_asked_through_guards() -> None:
    inner = PickingBook("a", "b", "c")
    guarded = ForwardingBroker(ForwardingBroker(inner))  # type: ignore[arg-type]
    got = await orders_of(guarded, ["a", "c"])
    assert [o.client_order_id for o in got] == ["a", "c"] and inner.reads == ["orders_of"]


async def test_any_other_broker_answers_from_its_whole_book_filtered() -> None:
    inner = Book("a", "b", "c")
    got = await orders_of(inner, {"b", "x"})  # type: ignore[arg-type]
    assert [o.client_order_id for o in got] == ["b"] and inner.reads == ["orders"]
