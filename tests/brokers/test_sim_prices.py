"""Every simulator prices from the paper broker's reference market (runner/brokers/sim_prices.py), so its
quotes agree with its fills and with the strike band of its master; ``runner sim --seed`` still picks the
walk. Before: each simulator walked around an arbitrary base (NIFTY index ~1005 on kotak_neo), so ATM
strikes fell outside the listed band."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from runner.brokers.alphapoint.sim import AlphaPointSim
from runner.brokers.blitz.sim import BlitzSim
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo import sim as kotak_sim
from runner.brokers.odin.sim import OdinSim
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.paper.price_paths import load_references, path_from_options, second_of
from runner.brokers.sim_prices import sim_price_path
from runner.model import Instrument, OptionType

IST = ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=IST)
NIFTY = Instrument("NSE", "NIFTY")
REFERENCE = load_references().underlyings["NIFTY"].price


def sims() -> dict[str, tuple[MatchingEngine, InstrumentMaster]]:
    kotak = kotak_sim.KotakNeoSim(master=kotak_sim.default_master())
    odin, blitz, apex = OdinSim(), BlitzSim(), AlphaPointSim()
    return {
        "kotak_neo": (kotak.engine, kotak.master or kotak_sim.default_master()),
        "odin": (odin.engine, odin.master),
        "blitz": (blitz.engine, blitz.master),
        "alphapoint": (apex.exchange.engine, apex.master),
    }


@pytest.mark.parametrize("broker", ["kotak_neo", "odin", "blitz", "alphapoint"])
def test_simulator_quotes_the_reference_market_inside_its_strike_band(broker: str) -> None:
    engine, master = sims()[broker]
    spot = engine.prices.price(NIFTY, second_of(NOW))
    assert abs(spot - REFERENCE) < REFERENCE / 50  # within 2% of the paper market's NIFTY
    strikes = {r.instrument.strike for r in master
               if r.instrument.symbol == "NIFTY" and r.instrument.option_type is OptionType.PE
               and r.instrument.expiry is not None and r.instrument.expiry >= NOW.date()}
    atm = (spot / 50).to_integral_value() * 50
    assert atm in strikes and atm - 500 in strikes and atm + 500 in strikes  # iron condor wings listed
    # Options trade at the model's premium, not around an arbitrary 100.
    pe = next(r.instrument for r in master if r.instrument.symbol == "NIFTY"
              and r.instrument.option_type is OptionType.PE and r.instrument.strike == atm - 500
              and r.instrument.expiry is not None and r.instrument.expiry >= NOW.date())
    assert engine.prices.price(pe, second_of(NOW)) == sim_price_path().price(pe, second_of(NOW))


def test_one_path_for_every_simulator_and_the_paper_broker_with_the_seed_kept() -> None:
    s = second_of(NOW)
    paper = path_from_options({"seed": 7}, references=load_references())
    assert sim_price_path({"seed": 7}).price(NIFTY, s) == paper.price(NIFTY, s)
    walks = {sim_price_path({"seed": seed}).price(NIFTY, s + n) for seed in (1, 2) for n in range(3)}
    assert len(walks) > 3  # the seed picks the walk
    assert all(abs(p - REFERENCE) < Decimal(500) for p in walks)


@pytest.mark.parametrize("broker", ["kotak_neo", "odin", "blitz", "alphapoint"])
def test_simulator_day_orders_do_not_expire_at_the_close(broker: str) -> None:
    """A simulator trades at any hour (its `runner sim` account says enforce_calendar: false), so a DAY
    order resting at 15:29:59 IST is still open a second later (the examples-on-simulators test failed
    when CI ran across 15:30 IST: every chased leg EXPIRED)."""
    from runner.model import OrderRequest, OrderStatus, OrderType, Product, Side

    engine, _ = sims()[broker]
    assert engine.config.session_close is None
    ist = ZoneInfo("Asia/Kolkata")
    before = dt.datetime(2026, 12, 1, 15, 29, 59, tzinfo=ist)
    request = OrderRequest("rnsimdayorder0001", Instrument("NSE", "RELIANCE"), Side.BUY, 1, OrderType.LIMIT,
                           Product.MIS, price=Decimal(1300))  # under the ~1400 market, inside the band: rests
    order = engine.place("acct", request, before)
    assert order.broker_order_id is not None
    after = engine.get("acct", order.broker_order_id, before + dt.timedelta(minutes=5))
    assert after is not None and after.status is OrderStatus.OPEN, after
