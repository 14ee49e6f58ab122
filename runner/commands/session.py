"""What a command that sends orders (run, apply) wraps around the engine: the account's broker, the
kill switch, this process's heartbeat and signal handling, and the exit code of an interrupted run.

Cold start: imported for every ``runner <cmd> --help``, so nothing heavy at module level (no engine,
pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from runner.cli import EXIT_BROKER, CommandError
from runner.commands.results import exit_code

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from runner.accounts import Account
    from runner.brokers.base import Broker
    from runner.engine.core import RunReport
    from runner.engine.interrupt import Interrupt
    from runner.engine.killswitch import GuardedBroker
    from runner.journal.store import Journal


def make_broker(account: Account, **context: Any) -> Broker:
    """The account's broker; a failure to build it (credentials missing, bad endpoint) is exit 5.
    Secret values are only resolved here, never printed: the messages name the variable or file."""
    from runner.brokers.registry import create_broker

    try:
        for key in account.credentials:  # resolve now: a missing one fails before the run is journaled
            account.secret(key)
        return create_broker(account, **context)
    except (LookupError, ValueError, OSError) as exc:
        raise CommandError(EXIT_BROKER, f"account {account.name!r} ({account.broker}): {exc}") from None


@contextlib.asynccontextmanager
async def kill_switch(broker: Broker, engine: Engine) -> AsyncIterator[GuardedBroker]:
    """``broker`` behind the journal database's kill switch (``runner halt`` / ``resume``), for commands
    that send orders (run, apply). The state is read at once and polled every 0.25 s while the block
    runs; an order refused by it makes its step REFUSED (exit 4). Use inside the running event loop."""
    from runner.engine.killswitch import ControlStore, ControlWatcher, GuardedBroker

    watcher = ControlWatcher(ControlStore(engine))
    watcher.start()
    try:
        yield GuardedBroker(broker, watcher)
    finally:
        await watcher.stop()


@contextlib.asynccontextmanager
async def run_process(journal: Journal, command: str) -> AsyncIterator[Interrupt]:
    """For ``run`` and ``apply``: this process's heartbeat in the journal (the liveness its runs' owner
    token is judged by, runner.liveness) and SIGTERM/SIGINT turned into a stop request that the engine
    honours at its next step boundary (runner.engine.interrupt). Use inside the running event loop."""
    from runner.engine.interrupt import Interrupt, catching_signals
    from runner.liveness import Heartbeat, ProcessIdentity

    interrupt = Interrupt()

    def say() -> None:
        print(
            f"runner {command}: {interrupt.name} received: no new step starts (exit steps included); "
            "in-flight broker calls finish, then the run is closed as interrupted",
            file=sys.stderr,
        )

    interrupt.on_request(say)
    async with Heartbeat(journal.processes, ProcessIdentity.current(), command):
        with catching_signals(interrupt):
            yield interrupt


def run_exit_code(report: RunReport, interrupt: Interrupt) -> int:
    """``exit_code``, or 128 + the signal (130 SIGINT, 143 SIGTERM) for a run a signal interrupted."""
    if report.status.value == "interrupted":
        return interrupt.exit_code
    return exit_code(report)
