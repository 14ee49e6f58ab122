"""Kill switch and calendar at the edges the review found: apply under a halt, reduce-only modifies,
the halt cancel pass (daemon and `runner halt --cancel-now`), a refused square-off, and the account's
calendar enforced by `runner run` / `runner apply`. Real paper broker, real SQLite, clocks moved."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from helpers.engine import RELIANCE, at, make_env, playbook
from helpers.sched import RecordingExecutor, make_daemon

from runner.accounts import PAPER, Account
from runner.brokers.paper.broker import PaperBroker, create
from runner.cli import EXIT_OK, EXIT_REFUSED, main
from runner.clock import VirtualClock
from runner.daemon.scheduler import BrokerPool, Daemon
from runner.engine.killswitch import (
    ControlState,
    ControlStore,
    ControlView,
    ControlWatcher,
    GuardedBroker,
    Halted,
    Mode,
)
from runner.journal.db import make_engine
from runner.journal.fires import FireStore
from runner.journal.store import Journal
from runner.model import Modification, OrderRequest, OrderStatus, OrderType, Product, Side

IST = ZoneInfo("Asia/Kolkata")

RESTING_BID = """\
version: 1
name: {name}
timezone: Asia/Kolkata
{extra}instruments:
  rel: {{exchange: NSE, symbol: RELIANCE}}
steps:
  - {{kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1300}}
  - {{kind: place, id: bid2, instrument: rel, side: BUY, quantity: 2, type: LIMIT, price: 1290}}
"""


@pytest.fixture(autouse=True)
def _quiet_logs():
    """CLI runs point the process-wide logger at stderr; a later capture would find it closed."""
    from runner import logs

    yield
    logs.configure(json=True, stream=io.StringIO(), force=True)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("RUNNER_ACCOUNTS", "RUNNER_RISK", "RUNNER_DB", "RUNNER_CALENDARS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _db(ws: Path) -> str:
    return f"sqlite:///{ws / 'j.db'}"


def _book(db: str, account: str = "paper") -> list[OrderStatus]:
    # built as the CLI builds it (same price path), so reading the book matches nothing new
    paper = create(Account(name=account, broker="paper"), db_url=db)
    return [o.status for o in asyncio.run(paper.orders())]


# --- 1. runner apply honours the kill switch; runner plan warns ------------------------------------


def test_apply_under_halt_is_refused_and_sends_nothing(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(ws)
    (ws / "pb.yaml").write_text(RESTING_BID.format(name="entry", extra=""))
    assert main(["plan", "pb.yaml", "--now", "--out", "plan.json", "--db", db]) == EXIT_OK
    assert "kill switch" not in capsys.readouterr().err
    assert main(["halt", "--reason", "desk says stop", "--db", db]) == EXIT_OK
    capsys.readouterr()
    # plan under a halt: a warning on stderr and the state in --json
    assert main(["plan", "pb.yaml", "--now", "--json", "--db", db]) == EXIT_OK
    out = capsys.readouterr()
    assert "warning: kill switch is HALT (desk says stop)" in out.err
    assert json.loads(out.out)["kill_switch"]["mode"] == "halt"

    assert main(["apply", "plan.json", "--json", "--db", db]) == EXIT_REFUSED
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "refused"
    assert report["steps"][0]["outcome"] == "refused"
    assert "kill switch" in report["steps"][0]["message"]
    assert _book(db) == []  # nothing reached the broker


# --- 2. reduce-only: a modify must reduce, like a place ---------------------------------------------


def _req(cid: str, side: Side, qty: int, price: str | None = None) -> OrderRequest:
    kind = OrderType.LIMIT if price else OrderType.MARKET
    return OrderRequest(
        cid,
        RELIANCE,
        side,
        qty,
        order_type=kind,
        product=Product.MIS,
        price=Decimal(price) if price else None,
    )


async def test_reduce_only_refuses_modifies_that_add_risk(tmp_path: Path) -> None:
    env = make_env(tmp_path, start=at(10, 0))
    store = ControlStore(env.engine)
    watcher = ControlWatcher(store)
    broker = GuardedBroker(env.broker(), watcher)
    entry = await broker.place(_req("entry", Side.BUY, 10, "2800"))  # resting bid, no position
    await broker.place(_req("long", Side.BUY, 50))
    env.clock.advance(2)
    exit_ = await broker.place(_req("exit", Side.SELL, 40, "3100"))  # resting offer against the long
    store.set(Mode.REDUCE_ONLY, "wind down", "ops", env.clock.now())
    await watcher.poll_once()

    for change in (
        Modification(price=Decimal("2890")),  # chase an entry
        Modification(order_type=OrderType.MARKET),  # convert an entry to market
        Modification(quantity=5),  # even smaller, an entry still adds risk
    ):
        with pytest.raises(Halted, match="would not reduce"):
            await broker.modify(entry, change)
    assert (await broker.get_order("entry")).price == Decimal("2800")  # type: ignore[union-attr]
    with pytest.raises(Halted, match="exceeds position 50"):
        await broker.modify(exit_, Modification(quantity=60))  # would flip the long to short
    moved = await broker.modify(exit_, Modification(price=Decimal("3050")))  # still only reduces
    assert moved.price == Decimal("3050")
    to_market = await broker.modify(exit_, Modification(order_type=OrderType.MARKET))
    assert to_market.order_type is OrderType.MARKET


# --- 3. the halt cancel pass --------------------------------------------------------------------------


async def test_daemon_halt_cancels_on_every_playbook_account_and_journals_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    engine = make_engine(db)
    clock = VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST))
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    for name, account in (("a", "paper"), ("b", "desk2"), ("c", "ghost")):
        text = RESTING_BID.format(name=name, extra=f"account: {account}\n")
        (pbdir / f"{name}.yaml").write_text(text.replace("steps:", "schedule: {daily: '09:15'}\nsteps:"))
    accounts = {"paper": PAPER, "desk2": Account(name="desk2", broker="paper")}
    store = ControlStore(engine)
    pool = BrokerPool(accounts, None, clock=clock, engine=engine)
    fires = FireStore(engine, "d1")
    daemon = Daemon(
        pbdir, fires=fires, control=store, executor=RecordingExecutor(clock), clock=clock, brokers=pool
    )
    pool.view = daemon.watcher
    await daemon.prepare()
    assert set(daemon.entries) == {"a", "b", "c"} and not pool  # no fire has opened a broker yet
    for account in ("paper", "desk2"):
        seed = PaperBroker(account, engine=engine, clock=clock)
        await seed.place(_req(f"{account}-1", Side.BUY, 1, "900"))
        await seed.place(_req(f"{account}-2", Side.BUY, 2, "890"))
        assert [o.status for o in await seed.open_orders()] == [OrderStatus.OPEN] * 2

    ControlStore(make_engine(db)).set(Mode.HALT, "runner halt", "ops", clock.now())
    await daemon.watcher.poll_once()
    await daemon.halt_passes_done()  # the pass runs beside the poller

    for account in ("paper", "desk2"):
        assert await PaperBroker(account, engine=engine, clock=clock).open_orders() == []
    passes = {p.account: p for p in store.last_passes()}
    assert {a: (p.open_before, p.cancelled, p.still_open) for a, p in passes.items() if a != "ghost"} == {
        "paper": (2, 2, 0),
        "desk2": (2, 2, 0),
    }
    assert passes["ghost"].error is not None and "unknown account" in passes["ghost"].error
    journal = Journal(engine=engine)
    run = journal.get_run(passes["desk2"].run_id or "")
    assert run is not None and (run.playbook, run.account, run.status.value) == ("halt", "desk2", "succeeded")
    methods = [c["method"] for c in journal.calls(run_id=run.run_id)]
    assert methods.count("cancel") == 2 and methods.count("open_orders") == 2  # listed, then proven empty
    from runner.commands.status import collect

    shown = {p["account"]: p for p in collect(db)["halt_cancels"]}
    assert (shown["paper"]["cancelled"], shown["paper"]["still_open"]) == (2, 0)


def test_halt_cancel_now_without_a_daemon(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(ws)
    (ws / "pb.yaml").write_text(RESTING_BID.format(name="bids", extra=""))
    assert main(["run", "pb.yaml", "--now", "--db", db]) == EXIT_OK
    assert _book(db) == [OrderStatus.OPEN, OrderStatus.OPEN]
    capsys.readouterr()
    assert main(["halt", "--db", db]) == EXIT_OK
    assert "--cancel-now" in capsys.readouterr().out  # the warning names the way out
    assert _book(db) == [OrderStatus.OPEN, OrderStatus.OPEN]

    assert main(["halt", "--cancel-now", "--json", "--db", db]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "halt"
    [result] = doc["cancel_pass"]
    assert (result["account"], result["open_before"], result["cancelled"], result["still_open"]) == (
        "paper",
        2,
        2,
        0,
    )
    assert _book(db) == [OrderStatus.CANCELLED, OrderStatus.CANCELLED]
    # recorded as this halt's pass: daemons sharing the halt out (runner.daemon.halt_share) skip it
    store = ControlStore(make_engine(db))
    since = store.get().since
    assert since is not None and store.passed_for(since) == {"paper"}
    assert main(["status", "--db", db]) == EXIT_OK
    text = capsys.readouterr().out
    assert "halt cancel passes" in text and "2 cancelled, 0 still open of 2" in text
    assert main(["halt", "--account", "ghost", "--cancel-now", "--db", db]) == 2  # unknown name: usage


# --- 4. a square-off whose exits are all refused fails at once ---------------------------------------


async def test_square_off_with_every_exit_refused_fails_without_waiting(tmp_path: Path) -> None:
    env = make_env(tmp_path, start=at(10, 0))
    await env.broker().place(_req("long", Side.BUY, 50))
    env.clock.advance(2)
    pb = playbook("steps:\n  - {kind: square_off, id: flat, verify_timeout: 45s}\n")
    halted = GuardedBroker(env.broker(), ControlView(ControlState(Mode.HALT, reason="stop")))
    report = await env.run(pb, broker=halted)
    [step] = report.steps
    assert step.outcome.value == "refused"
    assert "halted (stop)" in step.message
    calls = [c["method"] for c in env.journal.calls(run_id=report.run_id)]
    assert calls.count("positions") == 1  # read once to find the position; no verify polling


# --- 5. the account's calendar ------------------------------------------------------------------------

CAL_ACCOUNTS = "version: 1\naccounts:\n  desk: {broker: paper, enforce_calendar: true}\n"


def _cal_ws(ws: Path) -> None:
    (ws / "accounts.yaml").write_text(CAL_ACCOUNTS)
    (ws / "desk.yaml").write_text(
        RESTING_BID.format(name="desk-bids", extra="account: desk\ncalendar: NSE\n")
    )
    (ws / "paper.yaml").write_text(RESTING_BID.format(name="paper-bids", extra="calendar: NSE\n"))


@pytest.mark.parametrize(
    ("when", "code", "needle"),
    [
        (dt.datetime(2026, 3, 2, 10, 0), EXIT_OK, ""),  # Monday, in session
        (dt.datetime(2026, 3, 2, 9, 2), EXIT_OK, ""),  # pre-open
        (dt.datetime(2026, 3, 3, 10, 0), EXIT_REFUSED, "closed on 2026-03-03 (Holi)"),
        (dt.datetime(2026, 3, 7, 10, 0), EXIT_REFUSED, "closed on 2026-03-07 (Saturday)"),
        (dt.datetime(2026, 3, 2, 20, 0), EXIT_REFUSED, "outside the NSE session of 2026-03-02"),
        (dt.datetime(2028, 3, 1, 10, 0), EXIT_REFUSED, "has no data for 2028-03-01"),
    ],
    ids=["weekday", "pre-open", "holiday", "saturday", "evening", "uncovered"],
)
def test_run_refuses_outside_the_calendar(
    ws: Path, capsys: pytest.CaptureFixture[str], when: dt.datetime, code: int, needle: str
) -> None:
    _cal_ws(ws)
    db = _db(ws)
    with time_machine.travel(when.replace(tzinfo=IST), tick=True):
        assert main(["run", "desk.yaml", "--now", "--db", db]) == code
        err = capsys.readouterr().err
        assert needle in err
        if code == EXIT_REFUSED:
            assert "--ignore-calendar overrides" in err
            assert _book(db, "desk") == []  # nothing sent
        # the built-in paper account trades at any hour: its config says so
        assert main(["run", "paper.yaml", "--now", "--db", db]) == EXIT_OK


def test_ignore_calendar_trades_loudly_and_apply_is_refused_too(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cal_ws(ws)
    db = _db(ws)
    with time_machine.travel(dt.datetime(2026, 3, 7, 10, 0, tzinfo=IST), tick=True):  # Saturday
        assert main(["run", "desk.yaml", "--now", "--ignore-calendar", "--db", db]) == EXIT_OK
        assert "WARNING: --ignore-calendar: NSE is closed on 2026-03-07" in capsys.readouterr().err
        assert len(_book(db, "desk")) == 2
        assert main(["plan", "desk.yaml", "--now", "--out", "p.json", "--db", db]) == EXIT_OK
        assert main(["apply", "p.json", "--db", db]) == EXIT_REFUSED
        assert "closed on 2026-03-07 (Saturday)" in capsys.readouterr().err
        assert len(_book(db, "desk")) == 2


def test_paper_account_config_is_what_exempts_it(tmp_path: Path) -> None:
    from runner.accounts import load_accounts

    path = tmp_path / "a.yaml"
    path.write_text(CAL_ACCOUNTS + "  strict_paper: {broker: paper}\n")
    accounts = load_accounts(path)
    assert PAPER.enforce_calendar is False
    assert accounts["desk"].enforce_calendar is True and accounts["strict_paper"].enforce_calendar is True


def test_a_run_that_waits_for_its_at_times_may_start_before_the_session() -> None:
    from runner.accounts import Account
    from runner.commands.inputs import calendar_refusal

    desk = Account(name="desk", broker="paper", enforce_calendar=True)
    early = dt.datetime(2026, 3, 2, 8, 30, tzinfo=IST)  # Monday, before pre-open
    late = dt.datetime(2026, 3, 2, 20, 0, tzinfo=IST)
    holiday = dt.datetime(2026, 3, 3, 8, 30, tzinfo=IST)
    assert calendar_refusal("NSE", desk, early, waits_for_session=True) is None  # 08:50 for a 09:20 entry
    assert "outside the NSE session" in (calendar_refusal("NSE", desk, early) or "")  # --now: sends at once
    assert "outside the NSE session" in (calendar_refusal("NSE", desk, late, waits_for_session=True) or "")
    assert "Holi" in (calendar_refusal("NSE", desk, holiday, waits_for_session=True) or "")


async def test_brokers_are_opened_ahead_for_every_account_a_reload_brings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    clock = VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST))
    pbdir = tmp_path / "pb"
    pbdir.mkdir()

    def add(name: str, account: str) -> None:
        text = RESTING_BID.format(name=name, extra=f"account: {account}\n")
        (pbdir / f"{name}.yaml").write_text(text.replace("steps:", "schedule: {daily: '09:15'}\nsteps:"))

    add("a", "paper")
    accounts = {"paper": PAPER, "desk2": Account(name="desk2", broker="paper")}
    pool = BrokerPool(accounts, None, clock=clock, engine=engine)
    daemon = make_daemon(pbdir, engine, clock, RecordingExecutor(clock), "d1", brokers=pool)
    pool.view = daemon.watcher
    await daemon.prepare()
    assert daemon.open_brokers() == [] and set(pool) == {"paper"}  # what start() does
    add("b", "desk2")
    add("c", "ghost")
    await daemon.reload()
    lines = daemon.open_brokers()  # what the reload poller does next, not the first fire's lead time
    assert set(pool) == {"paper", "desk2"}
    assert len(lines) == 1 and lines[0].startswith("account 'ghost' of c: unknown account")
