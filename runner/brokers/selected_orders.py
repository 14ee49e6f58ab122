"""Reading some of the day's orders by client id in one book read.

:meth:`runner.engine.calls.BrokerCalls.refresh` brings a batch of our orders up to date (a square-off's
exits) with one day-book read. By the close a book holds the whole day, mostly others' and finished rows;
an adapter that can pick rows by client id before parsing them (:class:`SelectedOrders`) parses only
those. Every other broker answers through :meth:`Broker.orders`, filtered.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

from runner.brokers.base import Broker, ForwardingBroker
from runner.model import Order


@runtime_checkable
class SelectedOrders(Protocol):
    async def orders_of(self, client_order_ids: Collection[str]) -> Sequence[Order]:
        """The day-book rows carrying these client ids (as :meth:`Broker.orders` reads them): one read."""
        ...


async def orders_of(broker: Broker, client_order_ids: Collection[str]) -> list[Order]:
    """The orders of ``broker``'s day book with these client ids, from one book read. Guards pass reads
    through unchanged (:class:`ForwardingBroker`), so the adapter behind them is asked."""
    wanted = set(client_order_ids)
    inner: object = broker
    while isinstance(inner, ForwardingBroker):
        inner = inner.inner
    book = await inner.orders_of(wanted) if isinstance(inner, SelectedOrders) else await broker.orders()
    return [o for o in book if o.client_order_id in wanted]
