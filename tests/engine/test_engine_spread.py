"""spread steps: native on a multileg broker, legged (hedge first) otherwise, on_leg_failure policies."""

from __future__ import annotations

from decimal import Decimal

from helpers.engine import at, ce_instrument, make_env, pe_instrument, playbook
from helpers.faulty_broker import FaultyMultileg, FaultyNoMultileg

from runner.model import OrderStatus

SPREAD = """
steps:
  - kind: spread
    id: sp
    mode: {mode}
    leg_timeout: 5s
    on_leg_failure: {policy}
    legs:
      - {{id: short_ce, instrument: ce, side: SELL, lots: 1{ce_extra}}}
      - {{id: long_pe, instrument: pe, side: BUY, lots: 1, role: hedge}}
"""


def spread(mode: str = "auto", policy: str = "unwind", ce_extra: str = "") -> str:
    return SPREAD.format(mode=mode, policy=policy, ce_extra=ce_extra)


async def test_native_spread_on_a_multileg_broker(tmp_path):
    env = make_env(tmp_path)
    broker = FaultyMultileg(env.broker())
    report = await env.run(playbook(spread()), broker=broker)
    assert env.steps(report) == {"sp": "succeeded"}
    assert broker.calls["place_multileg"] == 1 and broker.calls["place"] == 0
    positions = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert positions == {ce_instrument().key: -75, pe_instrument().key: 75}


async def test_legged_spread_sends_the_hedge_leg_first(tmp_path):
    env = make_env(tmp_path)
    broker = FaultyNoMultileg(env.broker())
    sent: list[str] = []
    broker.hook("place", lambda r: sent.append(r.instrument.key))
    broker.hook("place", lambda r: sent.append(r.instrument.key))
    report = await env.run(playbook(spread()), broker=broker)
    assert env.steps(report) == {"sp": "succeeded"}
    assert sent == [pe_instrument().key, ce_instrument().key]


async def test_native_mode_on_a_broker_without_multileg_fails_clearly(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(playbook(spread(mode="native")), broker=FaultyNoMultileg(env.broker()))
    assert env.steps(report) == {"sp": "failed"}
    assert "no native multileg" in report.steps[0].message
    assert await env.broker().orders() == []


async def test_unfilled_leg_is_cancelled_and_filled_legs_unwound(tmp_path):
    env = make_env(tmp_path)
    # The CE leg is a limit far above the market: it will not fill within the leg timeout.
    report = await env.run(playbook(spread(mode="legged", ce_extra=", type: LIMIT, price: 140")))
    assert env.steps(report) == {"sp": "failed"}
    assert "unwound 1" in report.steps[0].message
    book = env.broker()
    by_status = sorted((o.instrument.key, o.side.value, o.status.value) for o in await book.orders())
    assert by_status == sorted(
        [
            (pe_instrument().key, "BUY", "filled"),
            (ce_instrument().key, "SELL", "cancelled"),
            (pe_instrument().key, "SELL", "filled"),  # the unwind
        ]
    )
    assert all(p.quantity == 0 for p in await book.positions())


async def test_cancel_pending_keeps_the_filled_hedge(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook(spread(mode="legged", policy="cancel_pending", ce_extra=", type: LIMIT, price: 140"))
    )
    assert env.steps(report) == {"sp": "failed"}
    positions = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert positions == {pe_instrument().key: 75}
    assert await env.broker().open_orders() == []


async def test_keep_leaves_the_pending_leg_working(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook(spread(mode="legged", policy="keep", ce_extra=", type: LIMIT, price: 140"))
    )
    assert env.steps(report) == {"sp": "failed"}
    (open_leg,) = await env.broker().open_orders()
    assert open_leg.instrument.key == ce_instrument().key and open_leg.status is OrderStatus.OPEN


async def test_leg_fills_when_the_market_reaches_it_within_the_timeout(tmp_path):
    env = make_env(tmp_path)
    env.prices.set(ce_instrument(), Decimal("130"), at(9, 15, 2))  # market rises to the limit after 2s
    report = await env.run(playbook(spread(mode="legged", ce_extra=", type: LIMIT, price: 128")))
    assert env.steps(report) == {"sp": "succeeded"}


def _paper_native_legs(monkeypatch, limit: int) -> None:
    """The paper broker's description, as if its native multileg orders took at most ``limit`` legs
    (ODIN's take 3: a 4-leg iron condor cannot be one native order there)."""
    import dataclasses

    from runner.brokers import descriptions

    narrow = dataclasses.replace(descriptions.PAPER, multileg_max_legs=limit)
    monkeypatch.setitem(descriptions.DESCRIPTIONS, "paper", narrow)


async def test_auto_spread_with_more_legs_than_a_native_order_takes_goes_legged(tmp_path, monkeypatch):
    _paper_native_legs(monkeypatch, 1)
    env = make_env(tmp_path)
    broker = FaultyMultileg(env.broker())
    report = await env.run(playbook(spread()), broker=broker)
    assert env.steps(report) == {"sp": "succeeded"}
    assert broker.calls["place_multileg"] == 0 and broker.calls["place"] == 2


async def test_native_spread_with_too_many_legs_fails_before_sending(tmp_path, monkeypatch):
    _paper_native_legs(monkeypatch, 1)
    env = make_env(tmp_path)
    broker = FaultyMultileg(env.broker())
    report = await env.run(playbook(spread(mode="native")), broker=broker)
    assert env.steps(report) == {"sp": "failed"}
    assert "take at most 1 legs, not 2" in report.steps[0].message
    assert await env.broker().orders() == []
