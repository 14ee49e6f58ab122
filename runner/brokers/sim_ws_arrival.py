"""When a WebSocket frame arrived at a wire simulator: the time the read that completed it came off the
socket (the WebSocket counterpart of :mod:`runner.brokers.sim_arrival`).

The websockets library hands a message to the handler (``async for raw in ws``) only when the handler's
task runs, after every other connection's task woken in the same poll; it has no public per-frame hook at
the read. So the server's connections are a :class:`StampedConnection` (``serve(create_connection=...)``,
public): its ``data_received`` (the asyncio protocol callback, where the bytes are read) counts the data
messages each read completes, from RFC 6455 framing alone, and queues that read's time once per message.
The handler takes one stamp per message it receives, in order (:meth:`StampedConnection.read_at`).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from websockets.asyncio.server import ServerConnection

_CONTROL = 0x8  # opcodes 0x8-0xF: close, ping, pong - never a message the handler receives


class MessageEnds:
    """Counts the data messages that end in a byte stream of WebSocket frames (after the HTTP upgrade
    request). Only the framing is read: 2 header bytes, the extended length, the mask; payloads skipped."""

    def __init__(self) -> None:
        self._handshake: bytearray | None = bytearray()  # None once the upgrade request has been read
        self._header = bytearray()
        self._payload_left = 0
        self._ends_message = False

    def feed(self, data: bytes) -> int:
        """How many messages ``data`` completes."""
        if self._handshake is not None:
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                return 0
            data = bytes(self._handshake[end + 4 :])
            self._handshake = None
        view = memoryview(data)
        done = 0
        while view:
            if self._payload_left:
                step = min(self._payload_left, len(view))
                view = view[step:]
                self._payload_left -= step
                if not self._payload_left and self._ends_message:
                    done += 1
                continue
            take = self._header_size() - len(self._header)
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == self._header_size():  # else more header to come (or its length grew)
                done += self._frame_started()
        return done

    def _header_size(self) -> int:
        h = self._header
        if len(h) < 2:
            return 2
        code = h[1] & 0x7F
        extended = 2 if code == 126 else 8 if code == 127 else 0
        return 2 + extended + (4 if h[1] & 0x80 else 0)

    def _frame_started(self) -> int:
        """A complete header read: 1 if its frame is an empty one ending a message."""
        h = self._header
        fin, opcode, code = h[0] & 0x80, h[0] & 0x0F, h[1] & 0x7F
        length = code if code < 126 else int.from_bytes(h[2 : 4 if code == 126 else 10], "big")
        self._header = bytearray()
        self._ends_message = bool(fin) and opcode < _CONTROL  # text/binary, or a fragmented one's last
        self._payload_left = length
        return 1 if not length and self._ends_message else 0


class StampedConnection(ServerConnection):
    """A server connection that queues, per data message, the wall time of the read that completed it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ends = MessageEnds()
        self._stamps: collections.deque[float] = collections.deque()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        for _ in range(self._ends.feed(data)):
            self._stamps.append(now)
        super().data_received(data)

    def read_at(self) -> float:
        """When the message the handler just received was read; call once per message, in order."""
        return self._stamps.popleft() if self._stamps else time.time()
