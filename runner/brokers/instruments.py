"""Instrument master: resolves broker-neutral instruments to a broker's own identifiers.

The generic format is a CSV with a header; the columns ``exchange,symbol`` are required and
``expiry,strike,option_type,lot_size,tick_size,freeze_quantity,token,trading_symbol`` optional. Any
other column is kept in ``MasterRow.extra`` for the adapter (e.g. Blitz ``instrument_id``, ODIN
``scrip_token``, AlphaPoint ``instrument_id``). Adapters whose broker publishes its own scrip master
may parse it into the same :class:`MasterRow` shape.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from runner.errors import InstrumentUnknown
from runner.model import Instrument, OptionType


@dataclass(frozen=True, slots=True)
class MasterRow:
    instrument: Instrument
    token: str | None = None  # broker's numeric/string id
    trading_symbol: str | None = None  # broker's symbol spelling
    extra: dict[str, str] = field(default_factory=dict)


def _opt(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def row_from_mapping(rec: dict[str, str]) -> MasterRow:
    expiry = _opt(rec.get("expiry"))
    strike = _opt(rec.get("strike"))
    opt_type = _opt(rec.get("option_type"))
    lot = _opt(rec.get("lot_size"))
    tick = _opt(rec.get("tick_size"))
    freeze = _opt(rec.get("freeze_quantity"))
    multiplier = _opt(rec.get("price_multiplier"))
    inst = Instrument(
        exchange=rec["exchange"].strip().upper(),
        symbol=rec["symbol"].strip().upper(),
        expiry=dt.date.fromisoformat(expiry) if expiry else None,
        strike=Decimal(strike) if strike else None,
        option_type=OptionType(opt_type.upper()) if opt_type else None,
        lot_size=int(lot) if lot else None,
        tick_size=Decimal(tick) if tick else None,
        freeze_quantity=int(freeze) if freeze else None,
        price_multiplier=Decimal(multiplier) if multiplier else None,
    )
    known = {"exchange", "symbol", "expiry", "strike", "option_type", "lot_size", "tick_size",
             "freeze_quantity", "token", "trading_symbol", "price_multiplier"}
    extra = {k: v for k, v in rec.items() if k not in known and v not in (None, "")}
    return MasterRow(inst, _opt(rec.get("token")), _opt(rec.get("trading_symbol")), extra)


def rows_from_csv(content: bytes | str, name: str = "<master>", *,
                  error: type[ValueError] = ValueError) -> Iterator[MasterRow]:
    """The rows of a generic master CSV; ``error`` (naming ``name`` and the line) on a bad row."""
    text = content.decode("utf-8-sig") if isinstance(content, bytes) else content
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for rec in reader:
        try:
            yield row_from_mapping(rec)
        except (KeyError, AttributeError, ValueError, ArithmeticError) as exc:
            raise error(f"{name}: line {reader.line_num}: {exc!r}") from None


class InstrumentMaster:
    def __init__(self, rows: Iterable[MasterRow] = (), *, broker: str | None = None) -> None:
        self.broker = broker
        self._by_key: dict[str, MasterRow] = {}
        self._by_token: dict[str, MasterRow] = {}
        # (exchange, symbol) -> expiry -> strikes; for rolling expiries and ATM-relative strikes
        self._chains: dict[tuple[str, str], dict[dt.date, set[Decimal]]] = {}
        self._add_all(rows)

    def _add_all(self, rows: Iterable[MasterRow]) -> None:
        """:meth:`add` for many rows, with the lookups hoisted: a 90,000-row master loads in one pass. The
        cyclic GC is paused meanwhile (rows are acyclic; its passes over 90,000 new objects cost ~20%)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            self._add_rows(rows)
        finally:
            if paused:
                gc.enable()

    def _add_rows(self, rows: Iterable[MasterRow]) -> None:
        by_key, by_token, chains = self._by_key, self._by_token, self._chains
        last_chain: tuple[str, str] | None = None
        chain: dict[dt.date, set[Decimal]] = {}
        for row in rows:
            inst = row.instrument
            by_key[inst.key] = row
            token = row.token
            if token is not None:
                by_token[token] = row
            expiry = inst.expiry
            if expiry is not None:
                underlying = (inst.exchange, inst.symbol)
                if underlying != last_chain:  # masters list an underlying's contracts together
                    chain = chains.setdefault(underlying, {})
                    last_chain = underlying
                strikes = chain.get(expiry)
                if strikes is None:
                    strikes = chain[expiry] = set()
                if inst.strike is not None:
                    strikes.add(inst.strike)

    @classmethod
    def load(cls, path: str | Path, *, broker: str | None = None) -> InstrumentMaster:
        with open(path, newline="") as fh:
            return cls((row_from_mapping(r) for r in csv.DictReader(fh)), broker=broker)

    def add(self, row: MasterRow, key: str | None = None) -> None:
        """``key``: ``row.instrument.key`` when the caller already has it (a snapshot's cache stores it)."""
        self._by_key[key or row.instrument.key] = row
        if row.token is not None:
            self._by_token[row.token] = row
        inst = row.instrument
        if inst.expiry is not None:
            strikes = self._chains.setdefault((inst.exchange, inst.symbol), {}).setdefault(inst.expiry, set())
            if inst.strike is not None:
                strikes.add(inst.strike)

    def fill_from(self, other: InstrumentMaster) -> None:
        """Add every row of ``other`` whose instrument and token this master lacks (its own rows win).
        Bulk: keys are taken from ``other``'s index, not recomputed per row."""
        len(other)  # a lazily built master (the paper one) completes itself here
        for key, row in other._by_key.items():
            if key in self._by_key or (row.token is not None and row.token in self._by_token):
                continue
            self._by_key[key] = row
            if row.token is not None:
                self._by_token[row.token] = row
            inst = row.instrument
            if inst.expiry is not None:
                chain = self._chains.setdefault((inst.exchange, inst.symbol), {})
                strikes = chain.setdefault(inst.expiry, set())
                if inst.strike is not None:
                    strikes.add(inst.strike)

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        """Whether an instrument key (``Instrument.key``) is listed."""
        return key in self._by_key

    def __iter__(self) -> Iterator[MasterRow]:
        return iter(self._by_key.values())

    def resolve(self, instrument: Instrument) -> MasterRow:
        """The master row for ``instrument``, with lot/tick/freeze metadata merged in; or raise."""
        row = self._by_key.get(instrument.key)
        if row is None:
            raise InstrumentUnknown(
                f"instrument {instrument.key!r} is not in the instrument master", broker=self.broker
            )
        merged = replace(
            row.instrument,
            lot_size=row.instrument.lot_size or instrument.lot_size,
            tick_size=row.instrument.tick_size or instrument.tick_size,
            freeze_quantity=row.instrument.freeze_quantity or instrument.freeze_quantity,
            price_multiplier=row.instrument.price_multiplier or instrument.price_multiplier,
        )
        return replace(row, instrument=merged)

    def by_token(self, token: str) -> MasterRow:
        try:
            return self._by_token[token]
        except KeyError:
            raise InstrumentUnknown(f"unknown instrument token {token!r}", broker=self.broker) from None

    def expiries(self, exchange: str, symbol: str) -> list[dt.date]:
        """Every expiry the master lists for ``symbol`` on ``exchange``, ascending (futures and options)."""
        return sorted(self._chains.get((exchange.upper(), symbol.upper()), {}))

    def strikes(self, exchange: str, symbol: str, expiry: dt.date) -> list[Decimal]:
        """Every option strike listed for ``symbol`` expiring on ``expiry``, ascending."""
        return sorted(self._chains.get((exchange.upper(), symbol.upper()), {}).get(expiry, ()))
