"""Kotak Neo quotes (market data) wire format: pure translation, no I/O.

The quotes endpoint's path, batching and reply parsing, apart from the order wire in
:mod:`runner.brokers.kotak_neo.wire`; :class:`runner.brokers.kotak_neo.client.KotakNeo` does the I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.brokers.kotak_neo.wire import BROKER, _message, error_for
from runner.errors import Rejected, Unavailable
from runner.wirejson import to_decimal

# --- quotes (market data) ----------------------------------------------------------------------------
# Official Trade API docs, "Quotes" (the developer docs Kotak publishes with the v2 API; SDK
# Kotak-Neo/Kotak-neo-api-v2 neo_api_client/api/quotes_neo_symbol_api.py, settings.py
# "quotes_neo_symbol_napi"): GET <baseUrl>/script-details/1.0/quotes/neosymbol/<seg>|<pSymbol>[,...]/<filter>,
# header ``Authorization: <access token>`` (plain; the SDK sends "Bearer <token>"), no session needed.
# Reply: a JSON array, one object per quoted instrument, every field a string:
#   {"exchange_token": "2885", "display_symbol": "RELIANCE-EQ", "exchange": "nse_cm",
#    "lstup_time": "1757915078" (unix seconds), "ltp": "1405.2000", "last_traded_quantity": "1", ...,
#    "ohlc": {...}, "depth": {"buy": [{"price", "quantity", "orders"} x5], "sell": [...]}}
# Errors: {"stat": "Not_Ok", "emsg": ..., "stCode": 1009}, or the gateway's {"fault": {...}}.
PATH_QUOTES = "/script-details/1.0/quotes/neosymbol"
QUOTES_PER_CALL = 50  # Kotak: at most 50 instruments per quotes call
QUOTE_FILTERS = frozenset({"all", "ltp", "ohlc", "depth", "oi", "52w", "circuit_limits", "scrip_details"})


def neo_symbol(segment: str, token: str) -> str:
    return f"{segment.lower()}|{token}"


def quotes_path(symbols: Sequence[str], quote_type: str = "all") -> str:
    """The request path for up to :data:`QUOTES_PER_CALL` ``seg|token`` symbols; ``|`` and ``,`` stay
    literal (the docs' curl example; the SDK percent-encodes them, which the gateway accepts too)."""
    if not symbols or len(symbols) > QUOTES_PER_CALL:
        raise ValueError(f"a quotes call takes 1..{QUOTES_PER_CALL} instruments, not {len(symbols)}")
    if quote_type.lower() not in QUOTE_FILTERS:
        raise ValueError(f"unknown quote filter {quote_type!r}")
    return f"{PATH_QUOTES}/{','.join(symbols)}/{quote_type}"


def batches(items: Sequence[Any], size: int = QUOTES_PER_CALL) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True, slots=True)
class QuoteRow:
    """One quote as Kotak states it: keyed by (segment, token); ``at`` None when no ``lstup_time``."""

    segment: str
    token: str
    ltp: Decimal | None
    at: dt.datetime | None
    bid: Decimal | None
    ask: Decimal | None


def quote_rows_of(payload: Any) -> list[Mapping[str, Any]]:
    """The quote objects of a reply. Liberal in what it accepts: the documented bare array, one bare
    object, or an array wrapped in ``data`` (as other Kotak reports are); an error envelope raises."""
    if isinstance(payload, Mapping):
        data = payload.get("data")
        if isinstance(data, list):
            payload = data
        elif "exchange_token" in payload:
            payload = [payload]
        else:
            error = error_for(payload) or Rejected(f"quotes: {_message(payload)}", broker=BROKER)
            raise error
    if not isinstance(payload, list):
        raise Unavailable("quotes reply is not a JSON array", broker=BROKER)
    return [r for r in payload if isinstance(r, Mapping)]


def _price(value: Any) -> Decimal | None:
    """A positive price, exactly; "0"/empty/absent means none (indices and empty depth levels say 0)."""
    if isinstance(value, float):  # wirejson parses numbers as Decimal; a float here is a caller's bug
        raise TypeError("quote prices must not be floats")
    try:
        price = to_decimal(value)
    except (ArithmeticError, ValueError, TypeError):
        return None
    return price if price is not None and price.is_finite() and price > 0 else None


def _best(levels: Any) -> Decimal | None:
    if isinstance(levels, list) and levels and isinstance(levels[0], Mapping):
        return _price(levels[0].get("price"))
    return None


def _update_time(value: Any) -> dt.datetime | None:
    """``lstup_time``: unix seconds as a string (docs); milliseconds are accepted too."""
    try:
        seconds = int(Decimal(str(value)))
    except (ArithmeticError, ValueError, TypeError):
        return None
    if seconds <= 0:
        return None
    if seconds > 10**11:  # milliseconds
        seconds //= 1000
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_quote(row: Mapping[str, Any]) -> QuoteRow | None:
    """One reply object as a QuoteRow, or None when it names no instrument."""
    token = row.get("exchange_token")
    segment = row.get("exchange")
    if token in (None, "") or not isinstance(segment, str) or not segment:
        return None
    depth = row.get("depth")
    bid = _best(depth.get("buy")) if isinstance(depth, Mapping) else None
    ask = _best(depth.get("sell")) if isinstance(depth, Mapping) else None
    return QuoteRow(segment.lower(), str(token), _price(row.get("ltp")), _update_time(row.get("lstup_time")),
                    bid, ask)
