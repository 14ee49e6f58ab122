"""AlphaPoint positions: GetAccountPositions balances (the truth for quantity) joined with the day's
trades (GetAccountTrades, replayed for average price and day quantities) into net positions. Pure
translation; :class:`runner.brokers.alphapoint.client.AlphaPointBroker` does the reads."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runner.brokers.alphapoint.wire import _int, ci, instrument_id_of, replay_trades
from runner.brokers.base import Positions, UnreadablePosition
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.errors import Malformed
from runner.model import Instrument, Position, Product


def positions_from_records(
    records: Any,
    trades: list[Mapping[str, Any]],
    master: InstrumentMaster,
    *,
    caller_instruments: Mapping[int, Instrument],
    instrument_products: Mapping[str, Product],
    default_product: Product,
) -> Positions:
    """Instrument products (matched through the master's ``product_symbol``, else trading symbol /
    symbol) of ``records`` become net positions; cash and products we do not trade are skipped. An
    instrument whose balance or trades cannot be read exactly is reported in ``Positions.unreadable``."""
    by_symbol: dict[str, MasterRow] = {}
    for row in master:
        sym = row.extra.get("product_symbol") or row.trading_symbol or row.instrument.symbol
        by_symbol[sym.upper()] = row
    bad: dict[int, str] = {}  # InstrumentId -> why its trades cannot be replayed exactly
    replayed = replay_trades(trades, bad)
    out = Positions()
    unreadable: list[UnreadablePosition] = []
    for rec in records if isinstance(records, list) else []:
        r = ci(rec)
        held = by_symbol.get(str(r.get("productsymbol") or "").upper())
        if held is None:
            continue  # cash / products we do not trade
        row = held
        iid = instrument_id_of(row)
        # A fractional balance (QuantityIncrement < 1) fails this instrument only: the read goes on
        # and reports it (Positions.unreadable), so a square-off still closes the others.
        try:
            qty = _int(r.get("amount"), "Amount")
        except Malformed as exc:
            unreadable.append(UnreadablePosition(row.instrument.key, str(exc)))
            continue
        if iid in bad:
            unreadable.append(UnreadablePosition(row.instrument.key, bad[iid]))
            continue
        avg, realized, bought, sold = replayed.get(iid, (Decimal(0), Decimal(0), 0, 0))
        instrument = caller_instruments.get(iid, row.instrument)
        product = instrument_products.get(row.instrument.key, default_product)
        out.append(
            Position(
                instrument=instrument,
                product=product,
                quantity=qty,
                average_price=avg if qty else Decimal(0),
                realized_pnl=realized,
                day_buy_quantity=bought,
                day_sell_quantity=sold,
            )
        )
    out.unreadable = tuple(unreadable)
    return out
