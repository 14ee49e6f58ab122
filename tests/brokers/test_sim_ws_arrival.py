"""runner.brokers.sim_ws_arrival counts the data messages each read completes from WebSocket framing alone,
whatever way the bytes are cut into reads."""

from __future__ import annotations

import random

from websockets.frames import Frame, Opcode

from runner.brokers.sim_ws_arrival import MessageEnds


def _frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])


UPGRADE = b"GET /WSGateway/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
# 4 messages: a short one, a ping (not a message), 300 bytes (16-bit length), one fragmented over a
# 70,000-byte continuation (64-bit length), an empty one
STREAM = (UPGRADE + _frame(Opcode.TEXT, b"a" * 5) + _frame(Opcode.PING, b"pp")
          + _frame(Opcode.TEXT, b"b" * 300)
          + _frame(Opcode.TEXT, b"x" * 10, fin=False) + _frame(Opcode.CONT, b"y" * 70_000)
          + _frame(Opcode.TEXT, b""))


def test_one_read_completing_several_messages_counts_each() -> None:
    assert MessageEnds().feed(STREAM) == 4


def test_a_message_counts_in_the_read_that_completes_it() -> None:
    ends = MessageEnds()
    counts = [ends.feed(STREAM[i : i + 1]) for i in range(len(STREAM))]
    assert sum(counts) == 4
    first = len(UPGRADE) + len(_frame(Opcode.TEXT, b"a" * 5)) - 1  # its last byte
    assert counts[first] == 1 and sum(counts[:first]) == 0


def test_any_cut_into_reads_counts_the_same() -> None:
    rng = random.Random(7)
    for _ in range(50):
        ends, at, total = MessageEnds(), 0, 0
        while at < len(STREAM):
            step = rng.randint(1, 600)
            total += ends.feed(STREAM[at : at + step])
            at += step
        assert total == 4


def test_nothing_counts_until_the_upgrade_request_ends() -> None:
    ends = MessageEnds()
    assert ends.feed(UPGRADE[:-2]) == 0
    assert ends.feed(UPGRADE[-2:] + _frame(Opcode.TEXT, b"{}")) == 1
