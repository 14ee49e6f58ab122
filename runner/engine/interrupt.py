"""SIGTERM / SIGINT for ``runner run`` and ``runner apply``: stop starting steps, close the run.

The first signal is noted (:class:`Interrupt`) and the engine stops at its next step boundary: no new
step starts (exit steps included: a process being stopped must not start trading), a step waiting for
its time is abandoned at once, a step already trading gets ``stop_grace`` seconds to finish its broker
calls (past that it is cancelled; an intent whose request may have left stays PENDING and is looked up
by the account's next run). The run is closed INTERRUPTED and the command exits 128 + the signal
(130 SIGINT, 143 SIGTERM). The handlers are removed after the first signal: a second one stops the
process at once (the next run of the account then closes the run as dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupt:
    """A stop request: which signal, and who to tell."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "stop request"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def request(self, signum: int) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        for callback in self._callbacks:
            callback()


@contextlib.contextmanager
def catching_signals(interrupt: Interrupt) -> Iterator[Interrupt]:
    """Within a running event loop: SIGTERM/SIGINT request ``interrupt`` (first signal only)."""
    loop = asyncio.get_running_loop()

    def received(signum: int) -> None:
        for s in SIGNALS:  # a second signal takes the default action: stop now
            loop.remove_signal_handler(s)
        interrupt.request(signum)

    for s in SIGNALS:
        loop.add_signal_handler(s, received, s)
    try:
        yield interrupt
    finally:
        for s in SIGNALS:
            loop.remove_signal_handler(s)
