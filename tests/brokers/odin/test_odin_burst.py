"""A burst of places on one ODIN book, over real sockets to the simulator: what each place costs.

Every place is read back once (an ack is not a confirmation: the OMS rejects afterwards). That read of
one order made the simulator build every row of the day's book, and its duplicate-tag check scanned every
order: a burst of N places cost N^2 rows, seen as replies late by a second (bench/lateness.py --broker
odin). These tests count the work, never time it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.odin import IDEA, MASTER

from runner.brokers.odin import sim as sim_module
from runner.brokers.odin.client import OdinBroker
from runner.brokers.odin.sim import OdinSim
from runner.brokers.odin.sim_book import SimOrder
from runner.brokers.odin.wire import ORDERS_PATH, REGULAR_PATH, WireOptions, place_body
from runner.model import OrderRequest, OrderStatus, Side


@pytest.fixture
def rows_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The order ids of every book row the simulator builds."""
    built: list[str] = []
    real = sim_module.book_row

    def counting(acct: Any, so: SimOrder, o: Any) -> dict[str, Any]:
        built.append(so.odin_id)
        return real(acct, so, o)

    monkeypatch.setattr(sim_module, "book_row", counting)
    yield built


def req(cid: str) -> OrderRequest:
    return OrderRequest(client_order_id=cid, instrument=IDEA, side=Side.BUY, quantity=1)


async def test_a_place_read_back_builds_only_its_own_row(
    sim: OdinSim, broker: OdinBroker, rows_built: list[str]
) -> None:
    await asyncio.gather(*(broker.place(req(f"rnburst{i:02d}")) for i in range(20)))
    rows_built.clear()
    placed = await broker.place(req("rnburst20"))
    assert placed.status is OrderStatus.FILLED  # confirmed by the read-back, as before
    assert rows_built == [placed.broker_order_id]  # not the 20 earlier orders' rows too
    rows_built.clear()
    got = await broker.get_order_by_broker_id(placed.broker_order_id or "")
    assert got.client_order_id == "rnburst20" and rows_built == [placed.broker_order_id]


async def test_order_history_of_one_order_builds_only_its_rows(
    sim: OdinSim, broker: OdinBroker, rows_built: list[str]
) -> None:
    orders = [await broker.place(req(f"rnhist{i}")) for i in range(5)]
    rows_built.clear()
    oid = orders[2].broker_order_id or ""
    data = await broker.session.call("GET", f"{ORDERS_PATH}/{oid}", mutating=False)
    assert [r["order_id"] for r in data] == [oid] and rows_built == [oid]


class _ScanCountingDict(dict[str, SimOrder]):
    scans = 0

    def values(self) -> Any:
        type(self).scans += 1
        return super().values()


async def test_the_duplicate_tag_check_is_a_lookup_and_still_notes_duplicates(
    sim: OdinSim, broker: OdinBroker
) -> None:
    for i in range(5):
        await broker.place(req(f"rndup{i}"))
    acct = next(iter(sim.accounts.values()))
    acct.orders = _ScanCountingDict(acct.orders)
    body = place_body(req("rndupdup"), MASTER.resolve(IDEA), WireOptions())
    for _ in range(2):  # the same order_identifier twice, raw: ODIN accepts it, the sim notes it
        await broker.session.call("POST", REGULAR_PATH, body=body, mutating=True)
    assert sim.duplicate_tags == [body["order_identifier"]]
    assert _ScanCountingDict.scans == 0  # no place walked the book


async def test_connections_warmed_while_preparing_carry_the_burst(sim: OdinSim, broker: OdinBroker) -> None:
    await broker.warm_connections(3)
    client = broker.session.client
    assert client is not None

    def pooled() -> set[Any]:
        conns = client._transport.client.connector._conns  # type: ignore[attr-defined]
        return {proto for q in conns.values() for proto, _ in q}

    warmed = pooled()
    assert len(warmed) == 3
    await asyncio.gather(*(broker.place(req(f"rnwarm{i}")) for i in range(3)))
    assert pooled() <= warmed  # the places and their read-backs went out on warmed connections
