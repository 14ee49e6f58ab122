"""QuantXpress Blitz market data on the wire: the REST quote request and reply (no I/O).

Moved out of :mod:`runner.brokers.blitz.wire` as is; the adapter that does the I/O is
:class:`runner.brokers.blitz.client.BlitzBroker`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from runner.brokers.base import Quote
from runner.brokers.blitz.wire import _int, epoch_ms, get, log
from runner.errors import Malformed
from runner.model import Instrument
from runner.wirejson import to_decimal

# Source followed: the official SDK's REST market-data client, blitz-api-py branch ``master``
# ``blitzsdk/marketdata/api_client.py`` (``get_quote``: POST ``{MD_API_URL}/marketfeed/quote`` with
# ``{"InstrumentIds": [...]}``; ``MD_API_URL`` defaults to ``http://uat.bull8.ai:7443/md-api`` in
# ``blitzsdk/common/config.py``) and its docs at commit aa61675 ``docs/blitzsdk/market-quotes.md`` (the
# reply: ``data`` keyed by the instrumentId as a string, each with ``instrumentID``, ``ltp``, ``ltt``
# (last trade time, epoch ms), ``timestamp`` (epoch ms), ``bidLevel`` / ``askLevel`` lists of
# ``{qty, price, orders}``). The SDK also has a streaming client (``marketdata/websocket_client.py``), but
# since a REST quote exists we use it: no subscription state, no staleness of our own making.
# Liberal in what we read: ``instrumentID``/``instrumentId``, a map or a list of rows, epoch ms as number
# or string, an IST ``yyyy-mm-dd hh:mm:ss`` string (docs/blitzsdk/response-structure.md) or ISO text.
# No batch cap is published: QUOTE_BATCH is our own choice (unverified), overridable per account.

MD_SUFFIX = "/md-api"
QUOTE_PATH = "marketfeed/quote"
QUOTE_BATCH = 50
_IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def quote_body(instrument_ids: Sequence[int]) -> dict[str, Any]:
    """The request of ``get_quote`` (blitzsdk/marketdata/api_client.py): ``{"InstrumentIds": [long...]}``."""
    return {"InstrumentIds": list(instrument_ids)}


def quote_time(value: Any) -> dt.datetime | None:
    """A quote's time as aware UTC: epoch ms (number or digits), an IST ``yyyy-mm-dd hh:mm:ss`` string or
    ISO 8601 text; None when absent or unreadable (the caller falls back to receipt time)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        text = value.strip().replace("T", " ").replace("Z", "+00:00")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_IST)  # the docs: timestamp strings are in IST
        return parsed.astimezone(dt.UTC)
    return epoch_ms(value)


def _best(levels: Any) -> Decimal | None:
    """The best price of a depth side (the first level), or None when empty or zero (no order there)."""
    if not isinstance(levels, Sequence) or isinstance(levels, str | bytes) or not levels:
        return None
    first = levels[0]
    if not isinstance(first, Mapping):
        return None
    price = to_decimal(get(first, "price"))
    return price if price is not None and price.is_finite() and price > 0 else None


def quote_rows(data: Any) -> list[tuple[str | None, Mapping[str, Any]]]:
    """(key, row) pairs of a quote reply's ``data``: a map keyed by instrumentId (the docs) or a list."""
    if isinstance(data, Mapping):
        if any(isinstance(v, Mapping) for v in data.values()):
            return [(str(k), v) for k, v in data.items() if isinstance(v, Mapping)]
        return [(None, data)]  # a single unwrapped row
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return [(None, r) for r in data if isinstance(r, Mapping)]
    return []


def quotes_from_reply(
    data: Any, wanted: Mapping[int, Sequence[Instrument]], received: dt.datetime
) -> dict[str, Quote]:
    """Quotes by ``Instrument.key`` for the instrument ids in ``wanted``.

    An instrument the reply does not carry, or carries without any usable price, is absent: never a
    made-up price. ``ltp`` 0 (nothing traded yet) is no LTP; the quote is still kept for its bid/ask.
    ``at`` is ``received`` (the reply is the current snapshot); ``traded_at`` is ``ltt``, the last
    trade's time."""
    out: dict[str, Quote] = {}
    for key, row in quote_rows(data):
        raw_id = get(row, "instrumentID", "instrumentId", default=key)
        try:
            iid = _int(raw_id, "instrumentId")
        except Malformed:
            log.warning("blitz: quote row with unreadable instrumentId %r skipped", raw_id)
            continue
        instruments = wanted.get(iid)
        if not instruments:
            continue  # not asked for
        try:
            ltp = to_decimal(get(row, "ltp", "lastTradedPrice", "LastTradedPrice"))
        except Malformed as exc:
            log.warning("blitz: quote of %s has an unreadable ltp: %s", iid, exc)
            continue
        if ltp is not None and (not ltp.is_finite() or ltp <= 0):
            ltp = None
        try:
            bid, ask = _best(get(row, "bidLevel", "bids")), _best(get(row, "askLevel", "asks"))
        except Malformed as exc:
            log.warning("blitz: quote of %s has an unreadable depth: %s", iid, exc)
            bid = ask = None
        if ltp is None and bid is None and ask is None:
            continue
        traded = quote_time(get(row, "ltt", "lastTradedTime"))
        for instrument in instruments:  # as of receipt: the reply is the feed's current snapshot
            out[instrument.key] = Quote(instrument, ltp, received, bid=bid, ask=ask, traded_at=traded)
    return out
