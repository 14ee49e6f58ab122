"""runner.brokers.http over real loopback sockets: each failure mode maps onto the error taxonomy."""

import asyncio
import datetime as dt
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from runner.brokers.http import RETRY_AFTER_CEILING, absolute_url, make_client, retry_after_seconds, send
from runner.errors import AuthExpired, OutcomeUnknown, RateLimited, Unavailable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _reply(status: str, extra: str = "") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        head = f"HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + b"{}")
        await writer.drain()
        writer.close()

    return handler


async def _drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)  # the broker "acted", then the reply is lost
    writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_dropped_reply_is_outcome_unknown_for_orders_and_unavailable_for_reads(
    serve, transport
) -> None:
    url = await serve(_drop)
    async with make_client(url, timeout=2, transport=transport) as client:
        with pytest.raises(OutcomeUnknown):
            await send(client, "POST", "/orders", broker="t", mutating=True, json={})
        with pytest.raises(Unavailable):
            await send(client, "GET", "/orders", broker="t", mutating=False)


@pytest.mark.parametrize(
    ("status", "extra", "error"),
    [("401 Unauthorized", "", AuthExpired), ("429 Too Many Requests", "Retry-After: 2\r\n", RateLimited),
     ("503 Service Unavailable", "", OutcomeUnknown), ("502 Bad Gateway", "", OutcomeUnknown)],
)
async def test_status_codes_map_to_the_taxonomy(serve, status, extra, error) -> None:
    url = await serve(_reply(status, extra))
    async with make_client(url, timeout=2) as client:
        with pytest.raises(error) as info:
            await send(client, "POST", "/orders", broker="t", mutating=True)
    if error is RateLimited:
        assert info.value.retry_after == 2.0


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before we connect: nothing listens
    async with make_client(f"http://127.0.0.1:{port}", timeout=2) as client:
        with pytest.raises(Unavailable):
            await send(client, "POST", "/orders", broker="t", mutating=True)


async def test_ok_response_is_returned(serve) -> None:
    url = await serve(_reply("200 OK"))
    async with make_client(url, timeout=2) as client:
        response = await send(client, "GET", "/x", broker="t", mutating=False)
    assert response.status_code == 200


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_read_timeout_after_sending_is_outcome_unknown(serve, transport) -> None:
    never = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        try:
            await asyncio.wait_for(never.wait(), 5)
        except TimeoutError:
            pass
        finally:
            writer.close()

    url = await serve(stall)
    async with make_client(url, timeout=0.1, transport=transport) as client:
        with pytest.raises(OutcomeUnknown):
            await send(client, "POST", "/orders", broker="t", mutating=True)
    never.set()


async def test_5xx_on_a_read_is_retryable(serve) -> None:
    url = await serve(_reply("503 Service Unavailable", "Retry-After: 1\r\n"))
    async with make_client(url, timeout=2) as client:
        with pytest.raises(Unavailable) as info:
            await send(client, "GET", "/orders", broker="t", mutating=False)
    assert info.value.retry_after == 1.0


# --- Retry-After: every form RFC 9110 allows, garbage refused, huge values bounded --------------------

DATE = "Mon, 02 Mar 2026 04:30:00 GMT"


def _response(retry_after: str, date: str | None = DATE) -> httpx.Response:
    headers = {"Retry-After": retry_after}
    if date is not None:
        headers["Date"] = date
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("10.0", 10.0),  # liberal: fractions too
     ("Mon, 02 Mar 2026 04:32:00 GMT", 120.0),  # IMF-fixdate, measured from the server's Date
     ("Monday, 02-Mar-26 04:30:30 GMT", 30.0),  # obsolete RFC 850 form
     ("Mon Mar  2 04:31:00 2026", 60.0),  # obsolete asctime form (GMT by definition)
     ("Mon, 02 Mar 2026 04:00:00 GMT", 0.0)],  # a date already past: no wait
)
def test_retry_after_parses_every_form(value: str, expected: float) -> None:
    assert retry_after_seconds(_response(value)) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "NaN", "nan", "-1", "-0.5", "soon", "1e400",
                                   "0x10", "", "Mon, 99 Foo 2026 04:32:00 GMT"])
def test_retry_after_garbage_is_unknown(value: str) -> None:
    assert retry_after_seconds(_response(value)) is None


@pytest.mark.parametrize("value", ["86400", "99999999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_retry_after_huge_is_bounded_finite(value: str) -> None:
    seconds = retry_after_seconds(_response(value))
    assert seconds is not None and math.isfinite(seconds)
    assert seconds == RETRY_AFTER_CEILING == 86400.0  # a day: anything longer is the same "not today"


def test_retry_after_date_without_a_date_header_is_measured_from_our_clock() -> None:
    now = dt.datetime(2026, 3, 2, 4, 30, tzinfo=dt.UTC)
    response = _response("Mon, 02 Mar 2026 04:30:45 GMT", date=None)
    assert retry_after_seconds(response, now=now) == pytest.approx(45.0)


@pytest.mark.parametrize(("header", "expected"), [("inf", None), ("NaN", None), ("-3", None), ("5", 5.0)])
async def test_429_with_bad_retry_after_still_maps_to_rate_limited(serve, header, expected) -> None:
    url = await serve(_reply("429 Too Many Requests", f"Retry-After: {header}\r\n"))
    async with make_client(url, timeout=2) as client:
        with pytest.raises(RateLimited) as info:
            await send(client, "POST", "/orders", broker="t", mutating=True)
    assert info.value.retry_after == expected


def _reply_with(extra: str, seen: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        head = f"HTTP/1.1 200 OK\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + b"{}")
        await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_a_target_is_merged_with_the_base_url_once_per_client(serve, transport) -> None:
    """The merged URL of a path is built once and reused; a new base URL (a session's host) starts afresh."""
    seen: list[bytes] = []
    url = await serve(_reply_with("", seen))
    async with make_client(url + "/api", timeout=2, transport=transport) as client:
        first = absolute_url(client, "/orders?x=1")
        assert str(first) == url + "/api/orders?x=1"
        for _ in range(2):
            await send(client, "GET", "/orders?x=1", broker="t", mutating=False)
        assert absolute_url(client, "/orders?x=1") is first
        assert all(r.startswith(b"GET /api/orders?x=1 HTTP/1.1") for r in seen), seen
        client.base_url = httpx.URL(url + "/v2")
        assert str(absolute_url(client, "/orders?x=1")) == url + "/v2/orders?x=1"


async def test_cookies_are_read_only_from_replies_that_set_one(serve, monkeypatch) -> None:
    """A reply without Set-Cookie never reaches the jar (httpx's urllib view of it is costly); one with it
    does, and the cookie goes back on the next request as before."""
    seen: list[bytes] = []
    extracted: list[int] = []
    original = httpx.Cookies.extract_cookies

    def counting(self: httpx.Cookies, response: httpx.Response) -> None:
        extracted.append(response.status_code)
        original(self, response)

    monkeypatch.setattr(httpx.Cookies, "extract_cookies", counting)
    plain = await serve(_reply_with("", seen))
    async with make_client(plain, timeout=2) as client:
        await send(client, "GET", "/x", broker="t", mutating=False)
    assert extracted == []
    setting = await serve(_reply_with("Set-Cookie: sid=abc; Path=/\r\n", seen))
    async with make_client(setting, timeout=2) as client:
        await send(client, "GET", "/x", broker="t", mutating=False)
        await send(client, "GET", "/y", broker="t", mutating=False)
    assert extracted == [200, 200]
    assert b"sid=abc" in seen[-1] and b"sid=abc" not in seen[-2]
