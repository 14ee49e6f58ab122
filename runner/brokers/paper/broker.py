"""The built-in paper broker: the matching engine (:mod:`runner.brokers.paper.matching`) persisted in the
local database.

Every call is one database transaction (``BEGIN IMMEDIATE`` on SQLite): read the account's version,
load only rows written since this process last saw the book, advance matching to the clock's now, apply
the call, write what changed, commit. So separate runs (entry at 09:20, square-off at 15:15) and separate
processes share one book, a crashed run restarts against it, and two writers cannot corrupt it.

Default prices: the reference market of :class:`runner.brokers.paper.price_paths.ReferencePath` (levels in
``runner/data/paper_prices.yaml``: NIFTY ~24500, RELIANCE ~1400, options from a simple model), so shipped
example playbooks meet a plausible market. Unknown symbols walk around 1000 (options 100).

Account options: ``reference_prices`` (true = the shipped file, default; false = none; or a file path),
``seed``, ``prices`` (base price per instrument key), ``price_csv``, ``volatility_ppm``,
``slippage_ticks``, ``partial_fill_slice``, ``cancel_delay``, ``band_pct``, ``session_close``,
``db_url``, ``idempotent_client_ids`` (default true; false = a repeated client id is a second order, as at
the real Indian brokers, and the broker no longer declares :attr:`Capability.IDEMPOTENT_CLIENT_ID`),
``lookup_lag`` (seconds a lookup by client id misses a new order, like a broker scanning its day book),
``instrument_master`` (default true: every order's instrument must exist in the generated master of the
day, :mod:`runner.brokers.paper.master`, resolved as a real broker's master would be; false = anything).
Context: ``clock=`` (default SystemClock), ``db_url=`` or ``engine=`` (a SQLAlchemy Engine),
``prices=`` (a PricePath object, e.g. a test's StepPath).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from runner.accounts import Account
from runner.brokers.base import Capability, Quote
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.paper.batch import PaperBatcher
from runner.brokers.paper.book import Book, OrderState, PositionState, fill_from_dict, fill_to_dict
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import PricePath, ReferenceBook, load_references, path_from_options
from runner.clock import Clock, SystemClock
from runner.errors import BrokerError, Rejected
from runner.journal.db import connection_slot, create_all
from runner.model import (
    Fill,
    Instrument,
    Modification,
    MultilegRequest,
    Order,
    OrderRequest,
    OrderStatus,
    Position,
    Product,
)

if TYPE_CHECKING:
    from runner.brokers.instruments import InstrumentMaster

T = TypeVar("T")

metadata = sa.MetaData()
accounts_t = sa.Table(
    "paper_accounts",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("ver", sa.Integer, nullable=False),
    sa.Column("next_seq", sa.Integer, nullable=False),
    sa.Column("last_second", sa.BigInteger, nullable=True),
)
orders_t = sa.Table(
    "paper_orders",
    metadata,
    sa.Column("account", sa.String, sa.ForeignKey("paper_accounts.name"), primary_key=True),
    sa.Column("broker_order_id", sa.String, primary_key=True),
    sa.Column("client_order_id", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("ver", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # The database itself refuses a second order with the same client id (a repeat, allowed only with
    # idempotent_client_ids: false, is stored as "<client id>#<n>"; its body keeps the real id).
    sa.UniqueConstraint("account", "client_order_id", name="uq_paper_orders_client"),
    sa.Index("ix_paper_orders_ver", "account", "ver"),
)
positions_t = sa.Table(
    "paper_positions",
    metadata,
    sa.Column("account", sa.String, sa.ForeignKey("paper_accounts.name"), primary_key=True),
    sa.Column("instrument", sa.String, primary_key=True),
    sa.Column("product", sa.String, primary_key=True),
    sa.Column("ver", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
fills_t = sa.Table(
    "paper_fills",
    metadata,
    sa.Column("account", sa.String, sa.ForeignKey("paper_accounts.name"), primary_key=True),
    sa.Column("fill_no", sa.Integer, primary_key=True),
    sa.Column("trade_id", sa.String, nullable=False),
    sa.Column("ver", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("ix_paper_fills_ver", "account", "ver"),
)

_INS_ORDER = orders_t.insert()
_UPD_ORDER = (
    orders_t.update()
    .where(orders_t.c.account == sa.bindparam("a"), orders_t.c.broker_order_id == sa.bindparam("b"))
    .values(status=sa.bindparam("status"), ver=sa.bindparam("ver"), body=sa.bindparam("body"))
)
_INS_POS = positions_t.insert()
_UPD_POS = (
    positions_t.update()
    .where(
        positions_t.c.account == sa.bindparam("a"),
        positions_t.c.instrument == sa.bindparam("i"),
        positions_t.c.product == sa.bindparam("p"),
    )
    .values(ver=sa.bindparam("ver"), body=sa.bindparam("body"))
)
_INS_FILL = fills_t.insert()
_INS_ACCOUNT = accounts_t.insert()
_SEL_ACCOUNT = (
    sa.select(accounts_t.c.ver, accounts_t.c.next_seq, accounts_t.c.last_second)
    .where(accounts_t.c.name == sa.bindparam("a"))
    .with_for_update()  # PostgreSQL row lock; SQLite is already serialized by BEGIN IMMEDIATE
)
_UPD_ACCOUNT = (
    accounts_t.update()
    .where(accounts_t.c.name == sa.bindparam("a"))
    .values(ver=sa.bindparam("ver"), next_seq=sa.bindparam("next_seq"), last_second=sa.bindparam("last"))
)
_SEL_ORDERS = sa.select(orders_t.c.body).where(
    orders_t.c.account == sa.bindparam("a"), orders_t.c.ver > sa.bindparam("since")
)
_SEL_POSITIONS = sa.select(positions_t.c.body).where(
    positions_t.c.account == sa.bindparam("a"), positions_t.c.ver > sa.bindparam("since")
)
_SEL_FILLS = (
    sa.select(fills_t.c.body)
    .where(fills_t.c.account == sa.bindparam("a"), fills_t.c.ver > sa.bindparam("since"))
    .order_by(fills_t.c.fill_no)
)


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


class _Db:
    """Runs the statements above on one DBAPI connection per Engine, shared by every paper book of
    the process (on SQLite also with the journal: :func:`runner.journal.db.connection_slot`). Core statements
    are compiled once for the dialect; executing them through the DBAPI cursor skips SQLAlchemy's
    per-call overhead, which dominated a paper place (~6 statements)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.slot = connection_slot(engine, "paper")
        self._compiled: dict[int, tuple[str, tuple[str, ...] | None]] = {}

    @property
    def lock(self) -> threading.RLock:
        return self.slot.lock  # read each time: a forked child gets a fresh one

    def _sql(self, stmt: sa.Executable) -> tuple[str, tuple[str, ...] | None]:
        got = self._compiled.get(id(stmt))
        if got is None:
            c = stmt.compile(dialect=self.engine.dialect)  # type: ignore[attr-defined]
            keys = tuple(c.positiontup) if self.engine.dialect.positional else None
            got = self._compiled[id(stmt)] = (str(c), keys)
        return got

    def begin(self) -> Any:
        cur = self.slot.connection().cursor()
        if self.sqlite:
            cur.execute("BEGIN IMMEDIATE")
        return cur

    def execute(self, cur: Any, stmt: sa.Executable, params: dict[str, Any]) -> Any:
        sql, keys = self._sql(stmt)
        cur.execute(sql, tuple(params[k] for k in keys) if keys is not None else params)
        return cur

    def executemany(self, cur: Any, stmt: sa.Executable, rows: list[dict[str, Any]]) -> None:
        sql, keys = self._sql(stmt)
        cur.executemany(sql, [tuple(r[k] for k in keys) for r in rows] if keys is not None else rows)

    def commit(self, cur: Any) -> None:
        cur.close()
        raw = self.slot.connection()
        if self.sqlite:
            raw.cursor().execute("COMMIT")
        else:
            raw.commit()

    def rollback(self) -> None:
        raw = self.slot.raw
        if raw is None:
            return
        try:
            if self.sqlite:
                if raw.dbapi_connection.in_transaction:  # the shared connection may be idle already
                    raw.cursor().execute("ROLLBACK")
            else:
                raw.rollback()
        except Exception:
            self.slot.invalidate()  # unusable: take a fresh connection next time


_DBS: weakref.WeakKeyDictionary[sa.Engine, _Db] = weakref.WeakKeyDictionary()


def _db_for(engine: sa.Engine) -> _Db:
    db = _DBS.get(engine)
    if db is None:
        db = _DBS[engine] = _Db(engine)
    return db


class PaperStore:
    """Loads and saves one account's :class:`Book` incrementally, keyed by a per-account version."""

    def __init__(self, engine: sa.Engine, account: str) -> None:
        self.engine = engine
        self.db = _db_for(engine)
        self.account = account
        self.ver: int | None = None  # version of the book held in memory; None = nothing loaded
        self._persisted_orders: set[str] = set()
        self._persisted_positions: set[tuple[str, Product]] = set()
        self._fill_count = 0
        self._ready = False

    def ensure_schema(self) -> None:
        if self._ready:
            return
        create_all(self.engine, metadata)  # safe when several processes start on an empty database
        with self.db.lock:
            try:
                cur = self.db.begin()
                if self.db.execute(cur, _SEL_ACCOUNT, {"a": self.account}).fetchone() is None:
                    self.db.execute(cur, _INS_ACCOUNT, {"name": self.account, "ver": 0, "next_seq": 1,
                                                        "last_second": None})
                self.db.commit(cur)
            except self.engine.dialect.loaded_dbapi.IntegrityError:
                self.db.rollback()  # another process created the account row first: that is the goal
            except BaseException:
                self.db.rollback()
                raise
        self._ready = True

    def sync(self, cur: Any, book: Book) -> None:
        """Bring ``book`` up to the stored version (only rows newer than what we hold)."""
        db = self.db
        row = db.execute(cur, _SEL_ACCOUNT, {"a": self.account}).fetchone()
        if row is None:
            raise RuntimeError(f"paper account {self.account!r} vanished from the database")
        ver, next_seq, last_second = row
        if ver == self.ver:
            return
        params = {"a": self.account, "since": -1 if self.ver is None else self.ver}
        for (body,) in db.execute(cur, _SEL_ORDERS, params).fetchall():
            o = OrderState.from_dict(json.loads(body))
            book.add_order(o)
            self._persisted_orders.add(o.broker_order_id)
        for (body,) in db.execute(cur, _SEL_POSITIONS, params).fetchall():
            p = PositionState.from_dict(json.loads(body))
            book.positions[p.key] = p
            self._persisted_positions.add(p.key)
        for (body,) in db.execute(cur, _SEL_FILLS, params).fetchall():
            book.fills.append(fill_from_dict(json.loads(body)))
        self._fill_count = len(book.fills)
        book.next_seq = max(book.next_seq, next_seq)
        if last_second is not None:
            book.last_second = max(book.last_second or last_second, last_second)
        self.ver = ver

    def flush(self, cur: Any, book: Book) -> None:
        if not book.dirty:
            return
        assert self.ver is not None
        db = self.db
        ver = self.ver + 1
        a = self.account
        orders, positions, fills = book.drain()
        ins: list[dict[str, Any]] = []
        upd: list[dict[str, Any]] = []
        for o in orders:
            params = {"status": o.status.value, "ver": ver, "body": _dumps(o.to_dict())}
            if o.broker_order_id in self._persisted_orders:
                upd.append({"a": a, "b": o.broker_order_id, **params})
            else:
                ins.append({"account": a, "broker_order_id": o.broker_order_id,
                            "client_order_id": stored_client_id(o), **params})
        if ins:
            db.executemany(cur, _INS_ORDER, ins)
            self._persisted_orders.update(str(p["broker_order_id"]) for p in ins)
        if upd:
            db.executemany(cur, _UPD_ORDER, upd)
        pins: list[dict[str, Any]] = []
        pupd: list[dict[str, Any]] = []
        for p in positions:
            body = _dumps(p.to_dict())
            if p.key in self._persisted_positions:
                pupd.append({"a": a, "i": p.key[0], "p": p.key[1].value, "ver": ver, "body": body})
            else:
                pins.append({"account": a, "instrument": p.key[0], "product": p.key[1].value,
                             "ver": ver, "body": body})
        if pins:
            db.executemany(cur, _INS_POS, pins)
            self._persisted_positions.update(p.key for p in positions)
        if pupd:
            db.executemany(cur, _UPD_POS, pupd)
        if fills:
            rows = []
            for f in fills:
                self._fill_count += 1
                rows.append({"account": a, "fill_no": self._fill_count, "trade_id": f.trade_id,
                             "ver": ver, "body": _dumps(fill_to_dict(f))})
            db.executemany(cur, _INS_FILL, rows)
        db.execute(cur, _UPD_ACCOUNT, {"a": a, "ver": ver, "next_seq": book.next_seq,
                                       "last": book.last_second})
        self.ver = ver

    def reset(self, book: Book) -> None:
        """Forget the in-memory copy (after a failed transaction): the next sync reloads everything."""
        self.ver = None
        self._persisted_orders.clear()
        self._persisted_positions.clear()
        self._fill_count = 0
        book.orders.clear()
        book.by_client.clear()
        book.working.clear()
        book.positions.clear()
        book.fills.clear()
        book.drain()
        book.next_seq = 1
        book.last_second = None


def stored_client_id(o: OrderState) -> str:
    """The ``client_order_id`` column: the id itself, or ``<id>#<n>`` for the n-th repeat of it."""
    return o.client_order_id if o.repeat == 0 else f"{o.client_order_id}#{o.repeat}"


BASE_CAPABILITIES = DESCRIPTIONS["paper"].capabilities  # one place states what a broker can do


class PaperBroker:
    name = "paper"

    def __init__(
        self,
        account: str = "paper",
        *,
        engine: sa.Engine | None = None,
        db_url: str | None = None,
        clock: Clock | None = None,
        prices: PricePath | None = None,
        config: MatchingConfig | None = None,
        check_instruments: bool = False,
        tz: str = "Asia/Kolkata",
    ) -> None:
        if engine is None:
            from runner.journal.db import shared_engine

            engine = shared_engine(db_url)
        self.account = account
        self.clock: Clock = clock or SystemClock()
        self.matching = MatchingEngine(prices, config)
        # Declared only when the matching engine refuses a repeated client id (all day): the default.
        self.capabilities = (
            BASE_CAPABILITIES | {Capability.IDEMPOTENT_CLIENT_ID}
            if self.matching.config.idempotent_client_ids
            else BASE_CAPABILITIES
        )
        self._book = self.matching.book(account)
        self.store = PaperStore(engine, account)
        # On: orders must name a contract the generated master lists that day (create() turns it on).
        self.check_instruments = check_instruments
        self._tz = ZoneInfo(tz)
        # On a database server calls are group-committed in a worker thread (runner.brokers.paper.batch).
        self._batcher = None if engine.dialect.name == "sqlite" else PaperBatcher(self)

    async def instrument_master(self) -> InstrumentMaster:
        """:class:`runner.brokers.base.InstrumentSource`: the generated master of the clock's trading day
        (a rehearsal's virtual date included)."""
        from runner.brokers.paper.master import generated_master

        return generated_master(self.clock.now().astimezone(self._tz).date())

    async def _resolve(self, instruments: Sequence[Instrument]) -> None:
        """Refuse, before anything is booked, an instrument the day's master does not list."""
        if self.check_instruments:
            master = await self.instrument_master()
            for instrument in instruments:
                master.resolve(instrument)  # InstrumentUnknown, worded as for a real broker's master

    def _txn(self, op: Callable[[dt.datetime], T], now: dt.datetime | None = None) -> T:
        """One call in its own transaction, at ``now`` (default: the clock's now)."""
        return self.run_batch([(op, now or self.clock.now())], single=True)[0][1]

    def run_one(self, op: Callable[[dt.datetime], T], now: dt.datetime) -> T:
        return self._txn(op, now)

    def run_batch(
        self, entries: Sequence[tuple[Callable[[dt.datetime], Any], dt.datetime]], single: bool = False
    ) -> list[tuple[bool, Any]]:
        """Apply ``entries`` in order in ONE transaction (each at its own time) and commit. A call's
        :class:`BrokerError` is its outcome (matching's progress before it is kept); anything else
        rolls the whole transaction back and is raised (``single``: the call's BrokerError too)."""
        store = self.store
        store.ensure_schema()
        db = store.db
        with db.lock:
            try:
                cur = db.begin()
                store.sync(cur, self._book)
                out: list[tuple[bool, Any]] = []
                failed: BrokerError | None = None
                for op, now in entries:
                    try:
                        out.append((True, op(now)))
                    except BrokerError as exc:
                        # Matching may have advanced before the refusal: keep that progress.
                        out.append((False, exc))
                        failed = exc
                store.flush(cur, self._book)
                db.commit(cur)
            except BaseException:
                db.rollback()
                store.reset(self._book)
                raise
        if single and failed is not None:
            raise failed
        return out

    async def _call(self, op: Callable[[dt.datetime], T]) -> T:
        """Run ``op`` in a transaction: at once on SQLite, group-committed off the loop on a server."""
        if self._batcher is None:
            return self._txn(op)
        result: T = await self._batcher.submit(op, self.clock.now())
        return result

    # Broker protocol ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        self.store.ensure_schema()

    async def close(self) -> None:
        return None

    async def relogin(self) -> None:
        """Paper has no session to renew: connecting again is all there is."""
        await self.connect()

    async def place(self, request: OrderRequest) -> Order:
        await self._resolve([request.instrument])
        order = await self._call(lambda now: self.matching.place(self.account, request, now))
        if order.status is OrderStatus.REJECTED:
            code = self.matching.reject_code(self.account, request.client_order_id)
            raise Rejected(order.reject_reason or "rejected", code=code.value if code else None,
                           broker="paper")
        return order

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        await self._resolve([leg.instrument for leg in request.legs])
        legs = await self._call(lambda now: self.matching.place_multileg(self.account, request, now))
        bad = next((o for o in legs if o.status is OrderStatus.REJECTED and
                    self.matching.reject_code(self.account, o.client_order_id) != "multileg"), None)
        if bad is not None:
            code = self.matching.reject_code(self.account, bad.client_order_id)
            raise Rejected(bad.reject_reason or "rejected", code=code.value if code else None, broker="paper")
        return legs

    def _broker_id(self, order: Order, now: dt.datetime) -> str:
        if order.broker_order_id:
            return order.broker_order_id
        found = self.matching.find(self.account, order.client_order_id, now)
        if found is None or found.broker_order_id is None:
            from runner.errors import NotFound

            raise NotFound(f"no order with client id {order.client_order_id}", broker="paper")
        return found.broker_order_id

    async def modify(self, order: Order, change: Modification) -> Order:
        return await self._call(
            lambda now: self.matching.modify(self.account, self._broker_id(order, now), change, now)
        )

    async def cancel(self, order: Order) -> Order:
        return await self._call(
            lambda now: self.matching.cancel(self.account, self._broker_id(order, now), now)
        )

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        def op(now: dt.datetime) -> list[Order]:
            out = []
            for leg in legs:
                current = self.matching.get(self.account, self._broker_id(leg, now), now)
                if current.status in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
                    current = self.matching.cancel(self.account, self._broker_id(leg, now), now)
                out.append(current)
            return out

        return await self._call(op)

    async def get_order(self, client_order_id: str) -> Order | None:
        return await self._call(lambda now: self.matching.find(self.account, client_order_id, now))

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        return await self._call(lambda now: self.matching.get(self.account, broker_order_id, now))

    async def orders(self) -> Sequence[Order]:
        return await self._call(lambda now: self.matching.orders(self.account, now))

    async def open_orders(self) -> Sequence[Order]:
        return await self._call(lambda now: self.matching.open_orders(self.account, now))

    async def positions(self) -> Sequence[Position]:
        return await self._call(lambda now: self.matching.positions(self.account, now))

    # Extras (not in the protocol) ----------------------------------------------------------------------

    async def fills(self) -> Sequence[Fill]:
        return await self._call(lambda now: self.matching.fills(self.account, now))

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """:class:`runner.brokers.base.MarketData`: the paper market's last price of each instrument now
        (the price path its fills use), stamped now: the paper market trades every second."""
        now = self.clock.now()
        at = now.astimezone(dt.UTC) if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
        return {i.key: Quote(i, self.matching.last_price(i, now), at) for i in instruments}

    async def ltp(self, instrument: Instrument) -> Decimal:
        """Last traded price on the paper market now: ``quotes([instrument])``'s, which always has one."""
        return self.matching.last_price(instrument, self.clock.now())


def references_from_options(options: dict[str, Any]) -> ReferenceBook | None:
    choice = options.get("reference_prices", True)
    if choice is True:
        return load_references()
    if choice is False or choice is None:
        return None
    return load_references(str(choice))


def create(account: Account, **context: Any) -> PaperBroker:
    options = dict(account.options)
    check = options.get("instrument_master", True)
    if not isinstance(check, bool):  # "false" from a hand-written file must not read as true
        raise ValueError(f"instrument_master must be true or false, not {check!r}")
    prices = context.get("prices") or path_from_options(
        options, tz=account.timezone, references=references_from_options(options)
    )
    options.setdefault("timezone", account.timezone)
    return PaperBroker(
        account.name,
        # An account that names its book's database keeps it there, apart from the journal's engine.
        engine=None if options.get("db_url") and not context.get("db_url") else context.get("engine"),
        db_url=context.get("db_url") or options.get("db_url"),
        clock=context.get("clock"),
        prices=prices,
        config=context.get("config") or MatchingConfig.from_options(options),
        check_instruments=check,
        tz=account.timezone,
    )
