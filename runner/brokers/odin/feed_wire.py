"""ODIN market feed codec (WebSocket): packets and their ZLIB framing, feed requests and their parsing,
touchline ticks (native struct and plain text). Pure translation, no I/O: the feed client
:mod:`runner.brokers.odin.feed` and the simulator's :mod:`runner.brokers.odin.sim_feed` do the I/O."""

from __future__ import annotations

import datetime as dt
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from runner.brokers.odin.wire import BROKER, odin_exchange, scrip_token
from runner.errors import InstrumentUnknown

if TYPE_CHECKING:
    from runner.brokers.instruments import MasterRow

log = logging.getLogger("runner.brokers.odin")  # stable name, not __name__: people filter on it

# Source: GitHub SIPL-Dev/python-odinmarketfeedclient, ``odin_market_feed/MarketFeedClient.py`` (the official
# ODIN market-feed client; no published protocol document). Facts taken from that code:
# * the feed is a plain WebSocket at ``ws[s]://host:port`` (a separate host from the REST API);
# * every binary WebSocket message carries packets ``<flag><5 ASCII digits: n><n bytes of ZLIB data>``,
#   flag byte 5 (compressed; the reader also accepts 2). A packet may span messages and a message may hold
#   several packets (``FragmentationHandler.defragment``);
# * an inflated packet holds one or more messages ``<flag><5 ASCII digits: n><n bytes>``
#   (``_defragment_inner_data``/``_get_message_length``). Client -> server packets are sent as the zlib
#   of the bare request text (``fragment_data``): no inner header;
# * requests are FIX-like text: ``63=FT3.0|64=<message code>|65=<type>|66=<HH:MM:SS>|...``; login
#   ``64=101|65=74|...|67=<user id>|68=<api key>|401=2``; touchline ``64=206|65=84|...|[49=1|]200=0|
#   1=<segment>$7=<token>|...|230=1`` (230=2 unsubscribes); LTP touchline ``64=347``; best five ``64=127``;
# * a touchline reply with fixed-length native data (``49=1``) is text up to ``|50=`` followed by sixteen
#   little-endian 32-bit ints: segment, token, last update time, last trade time (seconds since
#   1980-01-01), LTP, buy qty, buy price, sell qty, sell price, open, high, low, close, decimal locator,
#   previous close, indicative close (``_response_received``).
# Unverified (not stated by the client; we are liberal): the inner flag byte we write (5); the code of the
# reply messages (we look for ``|50=`` anywhere); the meaning of the decimal locator (we read a value >= 10
# as a divisor, 100 -> paise, and a value 2..9 as a count of decimal places); the time zone of the 1980
# epoch (IST wall time, as NSE's); and the plain-text touchline (response type 0), which we also parse
# by the tags the client names (1, 7, 8, 2, 3, 5, 6, 73, 74, 399).

FEED_PROTOCOL = "FT3.0"
FEED_LOGIN = 101
FEED_TOUCHLINE = 206
FEED_LTP_TOUCHLINE = 347
FEED_BEST_FIVE = 127
BINARY_MARKER = b"|50="
FEED_EPOCH = dt.datetime(1980, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST"))
# Market segment ids of the feed (our broker note, from the scrip master files; the client's examples
# ``1_22``/``1_2885`` are NSE cash tokens). A master row's ``market_segment_id`` wins over this table.
FEED_SEGMENT_ID = {"NSE_EQ": 1, "NSE_FO": 2, "BSE_FO": 4, "BSE_EQ": 8, "MCX_FO": 16, "NSE_CUR": 2048}
_TICK = struct.Struct("<IIiiIIIIIIIIIIII")


def feed_token(row: MasterRow) -> str:
    """``"{market segment id}_{token}"``, the feed's instrument key."""
    seg_raw = row.extra.get("market_segment_id") or row.extra.get("nMarketSegmentId")
    if seg_raw:
        seg = int(seg_raw)
    else:
        exchange = odin_exchange(row.instrument, row)
        if exchange not in FEED_SEGMENT_ID:
            raise InstrumentUnknown(f"exchange {exchange!r} has no ODIN feed segment id", broker=BROKER)
        seg = FEED_SEGMENT_ID[exchange]
    return f"{seg}_{scrip_token(row)}"


def _packet(flag: int, data: bytes) -> bytes:
    if len(data) > 99999:
        raise ValueError("ODIN feed packet longer than 99999 bytes")
    return bytes([flag]) + f"{len(data):05d}".encode("ascii") + data


def encode_request(text: str) -> bytes:
    """A client -> server WebSocket message, as ``fragment_data`` builds it."""
    import zlib

    return _packet(5, zlib.compress(text.encode("ascii")))


def encode_messages(messages: Sequence[bytes]) -> bytes:
    """A server -> client WebSocket message: one compressed packet holding ``messages``."""
    import zlib

    return _packet(5, zlib.compress(b"".join(_packet(5, m) for m in messages)))


class FeedDecoder:
    """Reassembles packets across WebSocket messages (``FragmentationHandler``). ``inner=True`` splits an
    inflated packet into its messages (server -> client); ``inner=False`` yields the inflated packet
    whole (client -> server). Bytes that do not start a packet are skipped one at a time, as the client
    does; a packet that does not inflate is dropped."""

    def __init__(self, *, inner: bool = True) -> None:
        self.buffer = b""
        self.inner = inner

    def feed(self, data: bytes) -> list[bytes]:
        import zlib

        self.buffer += data
        out: list[bytes] = []
        buf = self.buffer
        i = 0
        while len(buf) - i >= 6:
            digits = buf[i + 1:i + 6]
            if buf[i] not in (2, 5) or not digits.isdigit():
                i += 1
                continue
            n = int(digits)
            if len(buf) - i - 6 < n:
                break
            chunk = buf[i + 6:i + 6 + n]
            i += 6 + n
            try:
                body = zlib.decompress(chunk)
            except zlib.error:
                log.warning("odin feed: dropped a packet that does not inflate")
                continue
            out.extend(split_messages(body) if self.inner else [body])
        self.buffer = buf[i:]
        return out


def split_messages(body: bytes) -> list[bytes]:
    out = []
    while len(body) >= 6 and body[1:6].isdigit():
        n = int(body[1:6])
        if n <= 0:
            break
        out.append(body[6:6 + n])
        body = body[6 + n:]
    return out


def feed_time(at: dt.datetime) -> str:
    return at.astimezone(FEED_EPOCH.tzinfo).strftime("%H:%M:%S")


def feed_login(user_id: str, api_key: str, at: dt.datetime) -> str:
    password = f"68={api_key}|401=2" if api_key.strip() else "68="
    return f"63={FEED_PROTOCOL}|64={FEED_LOGIN}|65=74|66={feed_time(at)}|67={user_id}|{password}"


def touchline_request(tokens: Sequence[str], at: dt.datetime, *, subscribe: bool = True,
                      native: bool = True) -> str:
    """``subscribe_touchline(tokens, response_type="1" if native else "0", ltp_change_only=False)``."""
    scrips = ""
    for t in tokens:
        seg, tok = t.split("_")
        scrips += f"1={int(seg)}$7={int(tok)}|"
    kind = "49=1|" if native else ""
    return (f"63={FEED_PROTOCOL}|64={FEED_TOUCHLINE}|65=84|66={feed_time(at)}|{kind}200=0|{scrips}"
            f"230={1 if subscribe else 2}")


def parse_fields(text: str) -> dict[str, str]:
    """``a=b|c=d`` -> dict (the last value of a repeated tag wins)."""
    out: dict[str, str] = {}
    for part in text.split("|"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value
    return out


def parse_request(text: str) -> tuple[dict[str, str], list[str]]:
    """A feed request's fields and the ``seg_token`` list of its ``1=<seg>$7=<token>`` items."""
    tokens = []
    for part in text.split("|"):
        if part.startswith("1=") and "$7=" in part:
            seg, _, tok = part[2:].partition("$7=")
            tokens.append(f"{int(seg)}_{int(tok)}")
    return parse_fields(text), tokens


@dataclass(frozen=True, slots=True)
class Tick:
    token: str  # "{segment}_{token}"
    ltp: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    at: dt.datetime | None  # the feed's own last-trade (else last-update) time, aware UTC; None if absent


def _scale(raw: int, locator: int) -> Decimal:
    if locator >= 10:
        return Decimal(raw) / Decimal(locator)
    if locator > 1:
        return Decimal(raw).scaleb(-locator)
    return Decimal(raw)


def _feed_price(value: str | int | None, locator: int) -> Decimal | None:
    """A feed price; 0 (and absent) means no price, never a made-up one."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and any(c in value for c in ".eE"):
        d = Decimal(value)  # already in rupees (plain-text touchline; liberal)
    else:
        d = _scale(int(value), locator)
    return d if d > 0 else None


def _epoch_time(seconds: int) -> dt.datetime | None:
    if seconds <= 0:
        return None
    return (FEED_EPOCH + dt.timedelta(seconds=seconds)).astimezone(dt.UTC)


def _text_time(value: str | None) -> dt.datetime | None:
    """The client's rendering ``%Y-%m-%d %H%M%S`` or plain 1980-epoch seconds (liberal)."""
    if not value:
        return None
    if value.strip().lstrip("-").isdigit():
        return _epoch_time(int(value))
    for fmt in ("%Y-%m-%d %H%M%S", "%Y-%m-%d %H:%M:%S", "%d-%m-%Y %H:%M:%S"):
        try:
            naive = dt.datetime.strptime(value.strip(), fmt)
            return naive.replace(tzinfo=FEED_EPOCH.tzinfo).astimezone(dt.UTC)
        except ValueError:
            continue
    return None


def encode_tick(seg: int, token: int, *, ltp: int, bid: int, ask: int, bid_qty: int, ask_qty: int,
                locator: int, lut: dt.datetime, ltt: dt.datetime, at: dt.datetime) -> bytes:
    """A native touchline message (``49=1``) as the client decodes it (simulator side)."""
    def secs(t: dt.datetime) -> int:
        return int((t - FEED_EPOCH).total_seconds())

    head = f"63={FEED_PROTOCOL}|64=209|65=84|66={feed_time(at)}|".encode("ascii")
    body = _TICK.pack(seg, token, secs(lut), secs(ltt), ltp, bid_qty, bid, ask_qty, ask,
                      ltp, ltp, ltp, ltp, locator, ltp, 0)
    return head[:-1] + BINARY_MARKER + body


def parse_tick(message: bytes) -> Tick | None:
    """A touchline message (native binary after ``|50=``, or plain text by tag) -> Tick; None for any
    other message (login replies, acknowledgements, best five...)."""
    pos = message.find(BINARY_MARKER)
    if pos >= 0:
        data = message[pos + len(BINARY_MARKER):]
        if len(data) < _TICK.size:
            log.warning("odin feed: short native touchline (%d bytes)", len(data))
            return None
        (seg, tok, lut, ltt, ltp, _bq, bp, _sq, sp, *_ohlc, loc, _pc, _ic) = _TICK.unpack_from(data)
        return Tick(f"{seg}_{tok}", _feed_price(ltp, loc), _feed_price(bp, loc), _feed_price(sp, loc),
                    _epoch_time(ltt) or _epoch_time(lut))
    fields = parse_fields(message.decode("ascii", errors="ignore"))
    if "1" not in fields or "7" not in fields or "8" not in fields:
        return None
    try:
        loc = int(fields.get("399") or 0)
        token = f"{int(fields['1'])}_{int(fields['7'])}"
        at = _text_time(fields.get("73")) or _text_time(fields.get("74"))
        return Tick(token, _feed_price(fields.get("8"), loc), _feed_price(fields.get("3"), loc),
                    _feed_price(fields.get("6"), loc), at)
    except (ValueError, ArithmeticError):
        log.warning("odin feed: unreadable touchline %r", message[:80])
        return None
