"""One playbook (tests/brokers/fixtures/cross/cross.yaml: a place, a 2-leg NFO option spread, a 15:15
square-off)
run unchanged through the real engine on paper and on each adapter against its simulator over loopback
sockets. Every simulator is backed by runner.brokers.paper.matching with the same deterministic price path
and the same virtual clock start, and every adapter loads the same master CSV through its own ``create``.

Each test runs the playbook on paper and on one other broker and compares what the brokers report back
(orders, fills, positions) with each other and with what the playbook itself asks for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import importlib.util
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from runner.accounts import Account
from runner.brokers.base import Broker, Capability
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.registry import create_broker
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, RunReport, execute
from runner.engine.steps.common import build_request
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.journal.tables import RunStatus
from runner.model import Side
from runner.playbook.models import PlaceStep, Playbook, SpreadStep, SquareOffStep
from runner.playbook.yamlload import load_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "cross"
PLAYBOOK = FIXTURES / "cross.yaml"
MASTER = FIXTURES / "instruments.csv"
IST = ZoneInfo("Asia/Kolkata")
DAY = dt.date(2026, 3, 2)  # a Monday
START = dt.datetime.combine(DAY, dt.time(9, 15), tzinfo=IST)  # before the 09:20 entry: the engine waits
SLOT = dt.datetime.combine(DAY, dt.time(9, 0), tzinfo=IST)
ADAPTERS = ["blitz", "kotak_neo", "alphapoint", "odin"]
CONFIG = MatchingConfig()  # the paper defaults: 20% band, DAY orders expire at 15:30


def load_playbook() -> Playbook:
    return Playbook.model_validate(load_yaml(PLAYBOOK.read_text(), filename=str(PLAYBOOK)).value)


def price_path(pb: Playbook) -> StepPath:
    """The one deterministic path every market uses: flat until noon, then the call falls (so the
    15:15 exit prices differ from the entry prices)."""
    path = StepPath()
    opening = {"fut": Decimal("24480"), "ce": Decimal("120"), "pe": Decimal("95")}
    noon = {"fut": Decimal("24520.5"), "ce": Decimal("101.35"), "pe": Decimal("88.1")}
    for alias, price in opening.items():
        path.set(pb.instrument(alias), price, dt.datetime.combine(DAY, dt.time(9, 0), tzinfo=IST))
    for alias, price in noon.items():
        path.set(pb.instrument(alias), price, dt.datetime.combine(DAY, dt.time(12, 0), tzinfo=IST))
    return path


def expected_net(pb: Playbook) -> dict[str, int]:
    """Net quantity per instrument that the playbook's entry steps ask for, read from the playbook."""
    net: Counter[str] = Counter()
    for step in pb.steps:
        fields: list[Any] = [step] if isinstance(step, PlaceStep) else []
        fields += step.legs if isinstance(step, SpreadStep) else []
        for f in fields:
            req = build_request(pb, f)
            net[req.instrument.key] += req.quantity if req.side is Side.BUY else -req.quantity
    return {k: v for k, v in net.items() if v}


def without_square_off(pb: Playbook) -> Playbook:
    return pb.model_copy(update={"steps": [s for s in pb.steps if not isinstance(s, SquareOffStep)]})


# --- what a broker reports, normalised for comparison ------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    positions: dict[str, int]  # instrument key -> net quantity (zero rows left out)
    fills: list[tuple[str, str, int, str]]  # (instrument, side, filled quantity, average price), sorted


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def snapshot(broker: Broker) -> Snapshot:
    net: Counter[str] = Counter()
    for p in await broker.positions():
        net[p.instrument.key] += p.quantity
    fills = sorted(
        (o.instrument.key, o.side.value, o.filled_quantity, _money(o.average_price))
        for o in await broker.orders()
        if o.filled_quantity > 0
    )
    return Snapshot({k: v for k, v in net.items() if v}, fills)


# --- one market per broker: same path, same clock start, same master ---------------------------------


@dataclass
class Venue:
    broker: Broker
    clock: VirtualClock
    journal: Journal


BrokerCM = contextlib.AbstractAsyncContextManager[Broker]
Opener = Callable[[VirtualClock, StepPath, pytest.MonkeyPatch, Path], BrokerCM]


def _account(kind: str, name: str, **fields: Any) -> Account:
    body: dict[str, Any] = {"name": name, "broker": kind, "instruments": str(MASTER),
                            "rate_limit": {"orders_per_second": 1000, "burst": 100}, **fields}
    return Account.model_validate(body)


@contextlib.asynccontextmanager
async def _paper(clock: VirtualClock, prices: StepPath, mp: pytest.MonkeyPatch, tmp: Path
                 ) -> AsyncIterator[Broker]:
    engine = make_engine(f"sqlite:///{tmp / 'paper-book.db'}")
    yield create_broker(_account("paper", "cross-paper"), engine=engine, clock=clock, prices=prices,
                        config=CONFIG)


@contextlib.asynccontextmanager
async def _blitz(clock: VirtualClock, prices: StepPath, mp: pytest.MonkeyPatch, tmp: Path
                 ) -> AsyncIterator[Broker]:
    from runner.brokers.blitz.sim import start

    master = InstrumentMaster.load(MASTER, broker="blitz")
    async with start(clock=clock, master=master, engine=MatchingEngine(prices, CONFIG)) as sim:
        mp.setenv("RUNNER_CROSS_BLITZ_APP_KEY", "cross-test-app-key")  # a test value, not a real key
        account = _account("blitz", "cross-blitz", endpoints=sim.endpoints(),
                           credentials={"app_key": {"env": "RUNNER_CROSS_BLITZ_APP_KEY"}},
                           options={"user_id": "CROSS1"})
        yield create_broker(account, clock=clock)


@contextlib.asynccontextmanager
async def _kotak_neo(clock: VirtualClock, prices: StepPath, mp: pytest.MonkeyPatch, tmp: Path
                     ) -> AsyncIterator[Broker]:
    from runner.brokers.kotak_neo.sim import account_for, start

    master = InstrumentMaster.load(MASTER, broker="kotak_neo")
    async with start(clock=clock, master=master, engine=MatchingEngine(prices, CONFIG)) as sim:
        account, env = account_for(sim, "cross-kotak", instruments=str(MASTER), orders_per_second=1000,
                                   burst=100)
        for key, value in env.items():
            mp.setenv(key, value)
        yield create_broker(account, clock=clock)


@contextlib.asynccontextmanager
async def _alphapoint(clock: VirtualClock, prices: StepPath, mp: pytest.MonkeyPatch, tmp: Path
                      ) -> AsyncIterator[Broker]:
    from runner.brokers.alphapoint.sim import start

    master = InstrumentMaster.load(MASTER, broker="alphapoint")
    async with start(clock=clock.now, master=master, engine=MatchingEngine(prices, CONFIG)) as sim:
        mp.setenv("RUNNER_CROSS_AP_USER", "trader")  # the simulator's default user
        mp.setenv("RUNNER_CROSS_AP_PASS", "trader-pass")
        account = _account("alphapoint", "cross-ap", endpoints={"ws": sim.url},
                           credentials={"username": {"env": "RUNNER_CROSS_AP_USER"},
                                        "password": {"env": "RUNNER_CROSS_AP_PASS"}})
        yield create_broker(account, clock=clock)


@contextlib.asynccontextmanager
async def _odin(clock: VirtualClock, prices: StepPath, mp: pytest.MonkeyPatch, tmp: Path
                ) -> AsyncIterator[Broker]:
    from runner.brokers.odin.sim import start

    master = InstrumentMaster.load(MASTER, broker="odin")
    async with start(clock=clock, master=master, engine=MatchingEngine(prices, CONFIG)) as sim:
        account, env = sim.account_env("cross-odin", instruments=str(MASTER),
                                       rate_limit={"orders_per_second": 1000, "burst": 100})
        for key, value in env.items():
            mp.setenv(key, value)
        yield create_broker(account, clock=clock)


OPENERS: dict[str, Opener] = {"paper": _paper, "blitz": _blitz, "kotak_neo": _kotak_neo,
                              "alphapoint": _alphapoint, "odin": _odin}


def require(kind: str) -> None:
    modules = [f"runner.brokers.{kind}.broker"] if kind == "paper" else [
        f"runner.brokers.{kind}.client", f"runner.brokers.{kind}.sim"]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} does not exist yet")


@contextlib.asynccontextmanager
async def venue(kind: str, pb: Playbook, mp: pytest.MonkeyPatch, tmp: Path) -> AsyncIterator[Venue]:
    require(kind)
    clock = VirtualClock(START)
    where = tmp / kind
    where.mkdir()
    async with OPENERS[kind](clock, price_path(pb), mp, where) as broker:
        journal = Journal(engine=make_engine(f"sqlite:///{where / 'journal.db'}"))
        try:
            yield Venue(broker, clock, journal)
        finally:
            await broker.close()


async def run(v: Venue, pb: Playbook, account: str) -> RunReport:
    return await execute(pb, v.broker, v.journal, v.clock, account=account,
                         options=RunOptions(scheduled_for=SLOT))


def outcomes(report: RunReport) -> dict[str, str]:
    return {s.step_id: s.outcome.value for s in report.steps}


@dataclass(frozen=True)
class Result:
    before: Snapshot  # after the entry steps, before the square-off
    after: Snapshot  # after the square-off
    reports: tuple[RunReport, RunReport]
    finished_at: dt.datetime
    capabilities: frozenset[Capability]


async def split_run(kind: str, mp: pytest.MonkeyPatch, tmp: Path) -> Result:
    """The playbook minus its square-off (as if the process stopped before 15:15), positions read back,
    then the unchanged playbook: same run id, so the engine resumes and runs only the square-off."""
    pb = load_playbook()
    async with venue(kind, pb, mp, tmp) as v:
        first = await run(v, without_square_off(pb), kind)
        before = await snapshot(v.broker)
        second = await run(v, pb, kind)
        after = await snapshot(v.broker)
        return Result(before, after, (first, second), v.clock.now(), v.broker.capabilities)


async def one_go(kind: str, mp: pytest.MonkeyPatch, tmp: Path) -> Result:
    pb = load_playbook()
    async with venue(kind, pb, mp, tmp) as v:
        report = await run(v, pb, kind)
        after = await snapshot(v.broker)
        return Result(after, after, (report, report), v.clock.now(), v.broker.capabilities)


# --- tests ---------------------------------------------------------------------------------------------


def test_the_playbook_is_valid_and_trades_only_instruments_of_the_shared_master() -> None:
    from runner.playbook.validate import validate_text

    report = validate_text(PLAYBOOK.read_text(), filename=str(PLAYBOOK))
    assert report.ok, [d.message for d in report.errors]
    pb = load_playbook()
    master = InstrumentMaster.load(MASTER)
    for alias in pb.instruments:
        master.resolve(pb.instrument(alias))  # raises InstrumentUnknown otherwise
    kinds = [s.kind for s in pb.steps]
    assert kinds == ["place", "spread", "square_off"]
    assert pb.steps[2].at == "15:15"


async def test_paper_reference_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pb = load_playbook()
    res = await split_run("paper", monkeypatch, tmp_path)
    first, second = res.reports
    assert first.status is RunStatus.SUCCEEDED
    assert outcomes(first) == {"entry": "succeeded", "hedge": "succeeded"}
    assert second.resumed and second.status is RunStatus.SUCCEEDED
    assert outcomes(second) == {"entry": "succeeded", "hedge": "succeeded", "flat": "succeeded"}
    assert res.before.positions == expected_net(pb)
    assert res.after.positions == {}
    assert res.finished_at >= dt.datetime.combine(DAY, dt.time(15, 15), tzinfo=IST)  # virtual time moved
    # Every exit order sold/bought exactly what the entry steps had bought/sold.
    closed: Counter[str] = Counter()
    for key, side, qty, _ in res.after.fills:
        closed[key] += qty if side == "BUY" else -qty
    assert +closed == Counter() and -closed == Counter()
    # The exits traded at the path's 15:15 prices, the entries at its opening prices.
    path, exit_second = price_path(pb), int(res.finished_at.timestamp())
    exits = {(key, f"{path.price(pb.instrument(a), exit_second):.2f}") for a in pb.instruments
             for key in [pb.instrument(a).key]}
    entry_keys = {(k, p) for k, _, _, p in res.before.fills}
    assert {(k, p) for k, _, _, p in res.after.fills} == exits | entry_keys


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_split_run_matches_paper(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Same positions and fills as paper before the square-off, flat after it, same exit fills."""
    pb = load_playbook()
    got = await split_run(kind, monkeypatch, tmp_path)
    ref = await split_run("paper", monkeypatch, tmp_path)
    first, second = got.reports
    assert outcomes(first) == outcomes(ref.reports[0]), [s.message for s in first.steps]
    assert outcomes(second) == outcomes(ref.reports[1]), [s.message for s in second.steps]
    assert second.resumed and second.status is RunStatus.SUCCEEDED
    # mode: auto -> native on a multileg broker, legged otherwise
    native = Capability.NATIVE_MULTILEG in got.capabilities
    assert first.steps[1].message.startswith("native spread filled" if native else "all legs filled")
    assert got.before.positions == ref.before.positions == expected_net(pb)
    assert got.before.fills == ref.before.fills
    assert got.after.positions == ref.after.positions == {}
    assert got.after.fills == ref.after.fills


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_one_go_run_matches_paper(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    got = await one_go(kind, monkeypatch, tmp_path)
    ref = await one_go("paper", monkeypatch, tmp_path)
    (report, _), (ref_report, _) = got.reports, ref.reports
    assert report.status is RunStatus.SUCCEEDED, [s.message for s in report.steps]
    assert outcomes(report) == outcomes(ref_report) == {"entry": "succeeded", "hedge": "succeeded",
                                                        "flat": "succeeded"}
    assert got.after.positions == ref.after.positions == {}
    assert got.after.fills == ref.after.fills


# --- LTP-priced steps: every adapter prices from its broker's own market data --------------------------

LTP_PLAYBOOK = """
version: 1
name: cross-ltp
timezone: Asia/Kolkata
instruments:
  fut: {exchange: NFO, symbol: NIFTY, expiry: 2026-03-30, lot_size: 75, freeze_quantity: 1800}
  ce: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}
  pe: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24000, option_type: PE, lot_size: 75}
steps:
  - {kind: place, id: entry, at: "09:20", instrument: fut, side: BUY, lots: 1, type: LIMIT,
     price: {ltp: "+0.5%"}, product: MIS}
  - {kind: wait, id: filled, order: entry, status: [filled], timeout: 1m, on_timeout: fail}
  - kind: square_off
    id: flat
    at: "15:15"
    verify_timeout: 30s
    escalation: {limit_offset: 0.5, timeout: 20s, then_market: true, no_price: fail}
"""


@pytest.mark.parametrize("kind", ["paper", *ADAPTERS])
async def test_ltp_priced_entry_and_limit_first_exit_use_the_brokers_quotes(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The entry's limit comes from the broker's quote (24480 +0.5%, on the tick), and the 15:15 exit
    prices its limit from a quote too: with ``no_price: fail`` a missing quote would fail the step."""
    pb = Playbook.model_validate(load_yaml(LTP_PLAYBOOK, filename="cross-ltp.yaml").value)
    async with venue(kind, pb, monkeypatch, tmp_path) as v:
        report = await run(v, pb, kind)
        assert report.status is RunStatus.SUCCEEDED, [s.message for s in report.steps]
        orders = {o.side.value: o for o in await v.broker.orders()}
        assert orders["BUY"].price == Decimal("24602.40")  # 24480 * 1.005, a multiple of the 0.05 tick
        assert orders["BUY"].filled_quantity == 75
        assert orders["SELL"].filled_quantity == 75  # closed at 15:15 (limit first, priced by a quote)
        assert (await snapshot(v.broker)).positions == {}
