"""Helpers shared by run / plan / apply / rehearse / history / show (not a command itself)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from runner.engine import RunReport
from runner.gateway import EngineEvent, EventKind
from runner.playbook import Playbook

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from runner.brokers.base import Broker
    from runner.control import GuardedBroker


class PlaybookInvalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load_playbook(path: str, accounts_file: str | None = None) -> Playbook:
    """Validate first (every error at once, ``file:line:col`` style), then build the typed model."""
    from runner import validate

    try:
        return validate.load_playbook(path, accounts_file)
    except OSError as exc:
        raise PlaybookInvalid([f"{path}: cannot read: {exc.strerror}"]) from None
    except validate.PlaybookInvalid as exc:
        raise PlaybookInvalid([d.format() for d in exc.report.errors]) from None


@contextlib.asynccontextmanager
async def kill_switch(broker: Broker, engine: Engine) -> AsyncIterator[GuardedBroker]:
    """``broker`` behind the journal database's kill switch (``runner halt`` / ``resume``), for commands
    that send orders (run, apply). The state is read at once and polled every 0.25 s while the block
    runs; an order refused by it makes its step REFUSED (exit 4). Use inside the running event loop."""
    from runner.control import ControlStore, ControlWatcher, GuardedBroker

    watcher = ControlWatcher(ControlStore(engine))
    watcher.start()
    try:
        yield GuardedBroker(broker, watcher)
    finally:
        await watcher.stop()


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def configure_logging(args: argparse.Namespace, *, progress: bool) -> None:
    from runner import logs

    log_file = getattr(args, "log_file", None)
    if log_file:
        stream: TextIO = open(log_file, "a")  # noqa: SIM115 - lives for the process
        logs.configure(json=True, stream=stream, force=True)
    else:
        # With live progress on a TTY the console shows warnings only; otherwise JSON lines on stderr.
        logs.configure(stream=sys.stderr, level=logging.WARNING if progress else logging.INFO, force=True)


def local(at: dt.datetime | None, tz: ZoneInfo) -> str:
    return "-" if at is None else at.astimezone(tz).strftime("%H:%M:%S.%f")[:-3]


def progress_printer(
    tz: ZoneInfo, out: TextIO | None = None, *, orders: bool = True
) -> Callable[[EngineEvent], None]:
    def show(e: EngineEvent) -> None:
        t = local(e.at, tz)
        if e.kind is EventKind.STEP_STARTED:
            print(f"{t}  ▶ {e.step_id}: {e.message}", file=out, flush=True)
        elif e.kind is EventKind.STEP_FINISHED:
            print(
                f"{t}  {'✔' if e.outcome == 'succeeded' else '•'} {e.step_id} {e.outcome}: {e.message}",
                file=out,
                flush=True,
            )
        elif e.kind is EventKind.ORDER and orders and e.order is not None:
            o = e.order
            fill = f" filled {o.filled_quantity}@{o.average_price}" if o.filled_quantity else ""
            print(
                f"{t}      {o.client_order_id} {o.side.value} {o.quantity} {o.instrument.key} "
                f"{o.status.value}{fill}",
                file=out,
                flush=True,
            )
        elif e.kind is EventKind.NOTE:
            print(f"{t}      note: {e.message}", file=out, flush=True)
        elif e.kind in (EventKind.RUN_STARTED, EventKind.RUN_FINISHED):
            print(f"{t}  run {e.message}", file=out, flush=True)

    return show


def deduplicating(show: Callable[[EngineEvent], None]) -> Callable[[EngineEvent], None]:
    """Print an order line only when its status or fill changes (polling re-reads the same state)."""
    seen: dict[str, tuple[str, int]] = {}

    def inner(e: EngineEvent) -> None:
        if e.kind is EventKind.ORDER and e.order is not None:
            key = (e.order.status.value, e.order.filled_quantity)
            if seen.get(e.order.client_order_id) == key:
                return
            seen[e.order.client_order_id] = key
        show(e)

    return inner


def report_dict(report: RunReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "playbook": report.playbook,
        "account": report.account,
        "status": report.status.value,
        "resumed": report.resumed,
        "steps": [
            {
                "id": s.step_id,
                "kind": s.kind,
                "outcome": s.outcome.value,
                "message": s.message,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in report.steps
        ],
    }


def print_summary(report: RunReport, tz: ZoneInfo, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = [(s.step_id, s.kind, s.outcome.value, local(s.finished_at, tz), s.message) for s in report.steps]
    headers = ("STEP", "KIND", "OUTCOME", "AT", "DETAIL")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:-1])]
    print(
        f"\nrun {report.run_id} ({report.playbook} on {report.account}): {report.status.value}"
        f"{' (resumed)' if report.resumed else ''}",
        file=out,
    )
    print("  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths, strict=True)) + "  DETAIL", file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1], file=out)


def print_json(value: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(json.dumps(value, indent=2, default=str, sort_keys=True), file=out)


def exit_code(report: RunReport) -> int:
    from runner.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
    from runner.journal import RunStatus

    if report.status is RunStatus.FAILED:
        return EXIT_FAILED
    if report.status is RunStatus.REFUSED:
        return EXIT_REFUSED
    return EXIT_OK
