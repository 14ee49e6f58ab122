"""close_brokers closes every broker even when one fails to close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runner.brokers.closing import close_brokers


class Closable:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        if self.fail:
            raise OSError("socket already gone")


def test_one_failing_close_leaves_no_other_open(caplog: pytest.LogCaptureFixture) -> None:
    brokers = [Closable("a"), Closable("b", fail=True), Closable("c")]
    with caplog.at_level(logging.WARNING, logger="runner"):
        asyncio.run(close_brokers(brokers))
    assert [b.closed for b in brokers] == [True, True, True]
    assert "closing broker b: OSError: socket already gone" in caplog.text
