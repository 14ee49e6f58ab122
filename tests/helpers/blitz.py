"""Shared helpers for the Blitz tests: an account pointed at a running simulator."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner.accounts import Account
from runner.brokers.blitz.client import BlitzBroker, create
from runner.brokers.blitz.sim import Running
from runner.brokers.instruments import InstrumentMaster
from runner.clock import VirtualClock
from runner.model import Instrument, OptionType

FIXTURES = Path(__file__).parents[1] / "brokers" / "blitz" / "fixtures"
MASTER = FIXTURES / "instruments.csv"
APP_KEY_ENV = "RUNNER_TEST_BLITZ_APP_KEY"
APP_KEY = "blitz-test-app-key-d1f0"  # a test value, never a real key

IDEA = Instrument("NSE", "IDEA")
TCS = Instrument("NSE", "TCS")
SEEDEXAMPLE = Instrument("NSE", "SEEDEXAMPLE")
NIFTY_CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.CE)
NIFTY_CE_2 = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24600), OptionType.CE)

# Prices near the documented examples, so the docs' own request bodies pass the price band.
PRICES = {
    "NSE IDEA": "11",
    "NSE TCS": "4100",
    "NSE SEEDEXAMPLE": "45.90",
    "NSE RELIANCE": "1400",
    "NFO NIFTY 2026-12-29 24500 CE": "120",
    "NFO NIFTY 2026-12-29 24600 CE": "80",
}
SIM_OPTIONS: dict[str, Any] = {"prices": PRICES, "volatility_ppm": 0, "retry_after": "0.01"}


def market_time() -> VirtualClock:
    return VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))))


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


def account(
    sim: Running, *, name: str = "blitz1", user: str = "Algo123", dialect: str = "sdk", **options: Any
) -> Account:
    return Account(
        name=name,
        broker="blitz",
        endpoints=sim.endpoints(dialect),
        credentials={"app_key": {"env": APP_KEY_ENV}},
        instruments=str(MASTER),
        timeout_seconds=10.0,
        rate_limit={"orders_per_second": 500, "burst": 50},
        options={"user_id": user, "dialect": dialect, **options},
    )


def broker(sim: Running, **kw: Any) -> BlitzBroker:
    return create(account(sim, **kw), master=InstrumentMaster.load(MASTER, broker="blitz"))
