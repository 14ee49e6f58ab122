"""The paper broker modes the crash test relies on: ``idempotent_client_ids: false`` (a repeated client id
is a second order, persisted and counted) and ``lookup_lag`` (lookups by client id miss a new order)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.engine import NIFTY_FUT, make_env

from runner.brokers.base import Capability
from runner.brokers.paper.matching import MatchingConfig
from runner.errors import Rejected
from runner.model import OrderRequest, OrderStatus, OrderType, Side


def bid(cid: str = "c1") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        instrument=NIFTY_FUT,
        side=Side.BUY,
        quantity=75,
        order_type=OrderType.LIMIT,
        price=Decimal(24000),
    )


async def test_by_default_a_repeated_client_id_is_refused_and_the_capability_declared(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    broker = env.broker()
    assert Capability.IDEMPOTENT_CLIENT_ID in broker.capabilities
    await broker.place(bid())
    with pytest.raises(Rejected) as refused:
        await broker.place(bid())
    assert refused.value.code == "duplicate"
    assert len(await broker.orders()) == 1


async def test_without_idempotent_ids_a_repeated_client_id_is_a_second_order(tmp_path: Path) -> None:
    env = make_env(tmp_path, idempotent_client_ids=False)
    broker = env.broker()
    assert Capability.IDEMPOTENT_CLIENT_ID not in broker.capabilities
    first = await broker.place(bid())
    env.clock.advance(1)
    second = await broker.place(bid())
    assert first.broker_order_id != second.broker_order_id
    assert first.status is second.status is OrderStatus.OPEN
    found = await broker.get_order("c1")
    assert found is not None and found.broker_order_id == second.broker_order_id  # the latest answers
    # Persisted: another process's broker sees both, under the same client id.
    other = env.broker()
    assert [o.client_order_id for o in await other.orders()] == ["c1", "c1"]
    with env.engine.connect() as c:
        stored = sorted(r[0] for r in c.execute(sa.text("SELECT client_order_id FROM paper_orders")))
    assert stored == ["c1", "c1#1"]


async def test_lookup_lag_hides_a_new_order_from_lookups_by_client_id_only(tmp_path: Path) -> None:
    env = make_env(tmp_path, lookup_lag=20)
    broker = env.broker()
    placed = await broker.place(bid())
    assert placed.broker_order_id is not None
    env.clock.advance(19)
    assert await broker.get_order("c1") is None
    assert (await broker.get_order_by_broker_id(placed.broker_order_id)).client_order_id == "c1"
    assert [o.client_order_id for o in await broker.orders()] == ["c1"]
    env.clock.advance(1)
    assert await broker.get_order("c1") is not None


def test_options_are_read_strictly() -> None:
    cfg = MatchingConfig.from_options({"idempotent_client_ids": False, "lookup_lag": "15"})
    assert (cfg.idempotent_client_ids, cfg.lookup_lag) == (False, 15)
    assert MatchingConfig.from_options({}).idempotent_client_ids is True
    with pytest.raises(ValueError, match="true or false"):
        MatchingConfig.from_options({"idempotent_client_ids": "false"})


async def test_relogin_reconnects(tmp_path: Path) -> None:
    broker = make_env(tmp_path).broker()
    await broker.relogin()
    assert await broker.orders() == []
