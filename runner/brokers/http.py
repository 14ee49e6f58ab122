"""Shared HTTP plumbing for REST adapters: one client factory and one mapping of transport failures
onto :mod:`runner.errors`, so every adapter treats an ambiguous failure the same way.

The transport is ``httpx-aiohttp`` by default, behind the same httpx API: httpx's own pool is slow under
concurrency (httpx issue #3215) and ``bench/adapters.py`` measured aiohttp 1.2-2x faster at 10 and 100
accounts on every REST broker. ``RUNNER_HTTP_TRANSPORT=httpx`` (or ``transport="httpx"``) selects the
plain httpx transport. Note httpx-aiohttp maps a lost reply onto ConnectTimeout; :func:`_maybe_sent`
undoes that so an ambiguous order is never taken for one that was not sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import os
import re
import ssl
import weakref
from collections.abc import Mapping
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from runner.errors import OutcomeUnknown, RateLimited, SessionExpired, Unavailable


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """One verifying context per process: building one loads the CA bundle (~25 ms), which per client
    made logging in 100 accounts cost seconds (bench/adapters.py)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def preload() -> None:
    """Build the TLS context and import the transport now (a daemon's start: runner.daemon.preload), not
    on the first login inside a fire's lead time."""
    default_ssl_context()
    if os.environ.get("RUNNER_HTTP_TRANSPORT", "aiohttp") == "aiohttp":
        importlib.import_module("httpx_aiohttp")


def _aiohttp_transport(context: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    class NoResendTransport(AiohttpTransport):
        def get_client(self) -> Any:
            session = super().get_client()
            # aiohttp silently sends PUT/DELETE (and GET) again when a kept-alive connection drops
            # before the reply: a second cancel/modify the caller never asked for. Never re-send.
            session._retry_connection = False
            return session

    return NoResendTransport(verify=context, limits=limits, trust_env=False)


def make_client(
    base_url: str,
    *,
    timeout: float = 10.0,
    transport: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    kind = transport or os.environ.get("RUNNER_HTTP_TRANSPORT", "aiohttp")
    # idle connections live 15 s (httpx: 5): those opened while preparing fires (runner.brokers.warm) must
    # outlast the lead time to their instant
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=15.0)
    kwargs: dict[str, Any] = {
        "base_url": base_url,
        "timeout": httpx.Timeout(timeout),
        "headers": dict(headers or {}),
        "trust_env": False,
    }
    context = default_ssl_context()
    if kind == "aiohttp":
        kwargs["transport"] = _aiohttp_transport(context, limits)
    else:
        kwargs["limits"] = limits
        kwargs["verify"] = context
    client = httpx.AsyncClient(**kwargs)
    client._cookies = _SetCookieOnly(client.cookies.jar)  # same jar; the setter would wrap a plain Cookies
    return client


class _SetCookieOnly(httpx.Cookies):
    """The client's cookie jar, updated only from a reply that sets a cookie: httpx builds the jar's
    urllib view of every reply otherwise (~0.2 ms a request under load, bench/square_off_fleet.py
    --profile), and broker replies rarely set one."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


_URL_CACHE_SIZE = 256  # distinct request targets per client kept (paths; a query string makes its own)
_urls: weakref.WeakKeyDictionary[httpx.AsyncClient, tuple[httpx.URL, dict[str, httpx.URL]]] = (
    weakref.WeakKeyDictionary()
)


def absolute_url(client: httpx.AsyncClient, url: str) -> httpx.URL | str:
    """``url`` merged with the client's base URL, once per target: httpx parses a relative URL, the
    base and their merge again on every request (~0.2 ms under load). A new ``base_url`` (a session's
    own host) starts afresh."""
    base = client.base_url
    entry = _urls.get(client)
    if entry is None or entry[0] is not base:
        entry = _urls[client] = (base, {})
    known = entry[1]
    found = known.get(url)
    if found is None:
        if len(known) >= _URL_CACHE_SIZE:
            return url
        found = known[url] = client.build_request("GET", url).url
    return found


# A Retry-After longer than this reads as this (seconds): the value stays finite and comparable, and the
# gateway fails the call long before (``Tuning.max_retry_after``).
RETRY_AFTER_CEILING = 86400.0
_DELAY = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # delay-seconds, and a fraction; no sign, exponent or NaN


def _http_date(text: str) -> dt.datetime | None:
    """An HTTP-date in any of RFC 9110's three forms (IMF-fixdate, RFC 850, asctime), as UTC."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when  # asctime: GMT by definition


def retry_after_seconds(response: httpx.Response, *, now: dt.datetime | None = None) -> float | None:
    """The response's Retry-After in seconds, at most :data:`RETRY_AFTER_CEILING`; None when absent or
    garbage (NaN, infinity, negative, unreadable): the caller then backs off on its own schedule.

    RFC 9110 allows delay-seconds (digits) or an HTTP-date. Liberal in what we accept: a fraction
    ("1.5") is read too. A date is measured from the response's own Date header when it has one (the
    server's clock against the server's clock: no skew), else from ``now`` (default: the wall clock)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if _DELAY.fullmatch(value):
        return float(min(Decimal(value), Decimal(RETRY_AFTER_CEILING)))  # exact: "1e400" never gets here
    when = _http_date(value)
    if when is None:
        return None
    base = _http_date(response.headers.get("Date", "")) or now or dt.datetime.now(dt.UTC)
    return min(RETRY_AFTER_CEILING, max(0.0, (when - base).total_seconds()))


def _maybe_sent(exc: httpx.TransportError) -> bool:
    """Could the request have reached the server? httpx's own connect errors say no. httpx-aiohttp maps
    every aiohttp ClientConnectionError, including "server disconnected" after the request was written,
    onto ConnectTimeout, so there only a ClientConnectorError (the TCP connect itself) proves nothing was
    sent."""
    cause = exc.__cause__
    if cause is None or not type(cause).__module__.startswith("aiohttp"):
        return False
    import aiohttp

    # a read timeout (SocketTimeoutError) is mapped to ConnectTimeout too: only connect failures are safe
    return not isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    broker: str,
    mutating: bool,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request and map transport-level failures.

    * failure to connect: nothing reached the broker -> Unavailable (safe to retry);
    * timeout / reset after the request was written: for a mutating request the broker may have acted
      -> OutcomeUnknown (resolve by lookup); for a read -> Unavailable;
    * 401 -> SessionExpired (a login call that can be refused with 401 turns it into its own refusal);
      429 -> RateLimited(retry_after);
    * 5xx on a mutating request -> OutcomeUnknown: a load balancer may answer 503 after the broker took
      the order, so no 5xx proves it was not sent; on a read -> Unavailable (safe to retry).
    Other statuses are returned for the adapter to read the broker's own error envelope.
    """
    try:
        response = await client.request(method, absolute_url(client, url), **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        if not _maybe_sent(exc):
            raise Unavailable(f"cannot connect: {type(exc).__name__}", broker=broker) from exc
        if mutating:
            raise OutcomeUnknown(f"{method} {url}: connection lost after sending", broker=broker) from exc
        raise Unavailable(f"{method} {url}: connection lost", broker=broker) from exc
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        message = f"{method} {url}: {type(exc).__name__} after sending"
        if mutating:
            raise OutcomeUnknown(message, broker=broker) from exc
        raise Unavailable(message, broker=broker) from exc
    return check_status(response, method, url, broker=broker, mutating=mutating)


def check_status(
    response: httpx.Response, method: str, url: str, *, broker: str, mutating: bool
) -> httpx.Response:
    """The status mapping of :func:`send` (401, 429, 5xx), for a reply read another way too."""
    status = response.status_code
    if status == 401:
        raise SessionExpired("session expired or token invalid (HTTP 401)", code="401", broker=broker)
    if status == 429:
        raise RateLimited("rate limited (HTTP 429)", code="429", broker=broker,
                          retry_after=retry_after_seconds(response))
    if status >= 500:
        if mutating:
            raise OutcomeUnknown(f"HTTP {status} on {method} {url}", code=str(status), broker=broker)
        raise Unavailable(f"HTTP {status} on {method} {url}", code=str(status), broker=broker,
                          retry_after=retry_after_seconds(response))
    return response
