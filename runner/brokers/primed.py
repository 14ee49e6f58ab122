"""An order-entry HTTP request built, and its connection opened, ahead of its instant.

At 1,000 fires due at one instant every microsecond between the instant and a request's last byte is
multiplied by the fires ahead of it. Through httpx and aiohttp a request costs ~0.5 ms of Python
(building the request, parsing its URL, headers, the pool) and, on Python < 3.12, its body is written by
a task of its own: no request leaves before every fire released with it has built its own. A run armed
ahead of its instant (:func:`runner.engine.arming.stage_first`) knows its request exactly, so an
adapter that can (:class:`Primable`) builds it now, as bytes (h11: the HTTP/1.1 framing, a well-kept
library), on a connection of its own opened now; at the instant :meth:`PrimedRequest.send` writes the
bytes (one ``transport.write``, the request leaves in the caller's own turn) and reads the reply.

Nothing is sent while priming: a TCP (and TLS) handshake only. A primed connection the server closed
meanwhile is never written to (:meth:`PrimedRequest.usable`): the adapter then sends the ordinary way.
Once the bytes were written, any failure is an unknown outcome (resolved by lookup), never a re-send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import urlsplit

import h11
import httpx

from runner.brokers.http import check_status, default_ssl_context
from runner.errors import OutcomeUnknown
from runner.model import OrderRequest


@runtime_checkable
class Primable(Protocol):
    async def prime(self, request: OrderRequest) -> None:
        """Build ``request``'s place call and open its connection now (best effort: on any trouble the
        place at the instant goes the ordinary way)."""

    def unprime(self, client_order_id: str) -> None:
        """The primed request will not be sent (disarmed): close its connection."""

    def write_primed(self, request: OrderRequest) -> bool:
        """Write ``request``'s primed call now if it can leave now (primed for exactly it, on the current
        session, a rate-limit token free, never sent); True if written. Its :meth:`place` then only
        reads the reply."""


def adapter_of(broker: Any) -> Primable | None:
    """The adapter under ``broker``'s wrappers, if it can prime requests."""
    return _adapter(broker)


def _adapter(broker: Any) -> Primable | None:
    while broker is not None:  # under the engine's forwarding wrappers (kill switch, halt notes)
        if _primable(broker):
            return cast(Primable, broker)
        broker = getattr(broker, "inner", None)
    return None


_PRIMABLE: dict[type, bool] = {}


def _primable(broker: object) -> bool:
    """``isinstance(broker, Primable)``, decided once per class: a runtime-checkable Protocol's check
    walks its members on every call (6-13 us), and at the instant it ran on every wrapper of every
    fire's broker before its request was written (~20 ms for the last of 1,000 fires)."""
    kind = type(broker)
    known = _PRIMABLE.get(kind)
    if known is None:
        known = _PRIMABLE[kind] = isinstance(broker, Primable)
    return known


async def prime(broker: Any, request: OrderRequest) -> None:
    """``broker`` (or the adapter under its wrappers) primes ``request``; a broker that cannot is left
    alone."""
    adapter = _adapter(broker)
    if adapter is not None:
        await adapter.prime(request)


def write_primed(broker: Any, request: OrderRequest) -> bool:
    """The adapter under ``broker`` writes ``request``'s primed call now, unless a wrapper on the way
    (the kill switch: ``sends_now``) would not let it pass now; True if written."""
    while broker is not None:
        check = getattr(broker, "sends_now", None)
        if check is not None and not check(request):
            return False
        if _primable(broker):
            return cast(Primable, broker).write_primed(request)
        broker = getattr(broker, "inner", None)
    return False


def unprime(broker: Any, client_order_id: str) -> None:
    adapter = _adapter(broker)
    if adapter is not None:
        adapter.unprime(client_order_id)


class PrimedRequest:
    """One HTTP/1.1 request as bytes on a connection of its own, sent at most once."""

    def __init__(
        self, method: str, url: str, raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.method = method
        self.url = url
        self.raw = raw
        self._reader = reader
        self._writer = writer
        self._parser = h11.Connection(h11.CLIENT)
        self._sent = False

    @classmethod
    async def open(
        cls, base_url: str, method: str, path: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> PrimedRequest:
        parts = urlsplit(base_url.rstrip("/") + path)
        host = parts.hostname or ""
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        framing = h11.Connection(h11.CLIENT)
        host_header = parts.netloc.rpartition("@")[2]
        fields = [("Host", host_header), *headers.items(), ("Content-Length", str(len(body)))]
        raw = framing.send(h11.Request(method=method, target=target, headers=fields)) or b""
        raw += (framing.send(h11.Data(data=body)) or b"") + (framing.send(h11.EndOfMessage()) or b"")
        ssl = default_ssl_context() if tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl, server_hostname=host if tls else None), timeout
        )
        primed = cls(method, parts.geturl(), raw, reader, writer)
        # the parser must expect the reply to this very request
        primed._parser.send(h11.Request(method=method, target=target, headers=fields))
        primed._parser.send(h11.Data(data=body))
        primed._parser.send(h11.EndOfMessage())
        return primed

    def usable(self) -> bool:
        """Not sent yet and the connection still open (the server may close an idle one)."""
        return not self._sent and not self._writer.is_closing() and not self._reader.at_eof()

    @property
    def written(self) -> bool:
        return self._sent

    def write(self) -> None:
        """The request's bytes to the socket, now (asyncio writes at once when the socket can take it)."""
        self._sent = True
        self._writer.write(self.raw)

    async def send(self, *, broker: str, timeout: float) -> httpx.Response:
        """Write the request and read its reply. Any failure once written: :class:`OutcomeUnknown`."""
        self.write()
        return await self.reply(broker=broker, timeout=timeout)

    async def reply(self, *, broker: str, timeout: float) -> httpx.Response:
        """The reply to the request written (:meth:`write`). Any failure: :class:`OutcomeUnknown`."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._reply()
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            raise OutcomeUnknown(
                f"{self.method} {self.url}: {type(exc).__name__} after sending", broker=broker
            ) from exc
        finally:
            self.close()
        return check_status(response, self.method, self.url, broker=broker, mutating=True)

    async def _reply(self) -> httpx.Response:
        parser = self._parser
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                parser.receive_data(data)  # b"" is EOF: a cut-off reply raises a ProtocolError next
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("connection closed before the reply")
        assert head is not None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
        request = httpx.Request(self.method, self.url)
        return httpx.Response(head.status_code, headers=headers, content=bytes(body), request=request)

    def close(self) -> None:
        self._writer.close()


class PrimedBook(dict[str, tuple[OrderRequest, object, PrimedRequest, Any]]):
    """An adapter's primed requests by client order id: (the request it was built for, the session it
    was built on, the primed request, the adapter's own extra: e.g. its rate-limit key). The rules every
    adapter shares: one primed request per client id; it is used only for exactly the request it was
    built for, on the session still current, on a connection still open, and never once the order went
    the ordinary way; otherwise it is closed and the place goes the ordinary way."""

    def add(self, request: OrderRequest, session: object, primed: PrimedRequest, extra: Any) -> None:
        """Keep ``primed`` for ``request`` (one primed meanwhile wins: ``primed`` is closed)."""
        if request.client_order_id in self:
            primed.close()
            return
        self[request.client_order_id] = (request, session, primed, extra)

    def unprime(self, client_order_id: str) -> None:
        entry = self.pop(client_order_id, None)
        if entry is not None:
            entry[2].close()

    def usable(self, request: OrderRequest, session: object) -> PrimedRequest | None:
        """The primed call of exactly ``request``, built on ``session`` (the adapter's current one; None
        when it has none or it is stale), not sent and on an open connection."""
        entry = self.get(request.client_order_id)
        if entry is None or session is None:
            return None
        primed_for, built_on, primed, _ = entry
        if primed_for == request and built_on is session and primed.usable():
            return primed
        return None

    def take(self, request: OrderRequest, session: object) -> PrimedRequest | None:
        """For ``request``'s place: its primed call if written already (``write_primed``: the place reads
        its reply) or still usable; any other is closed. Either way it leaves the book."""
        entry = self.get(request.client_order_id)
        if entry is not None and entry[2].written:
            del self[request.client_order_id]
            return entry[2]
        primed = self.usable(request, session)
        entry = self.pop(request.client_order_id, None)
        if primed is None and entry is not None:
            entry[2].close()
        return primed

    def close_all(self) -> None:
        for cid in list(self):
            self.unprime(cid)
