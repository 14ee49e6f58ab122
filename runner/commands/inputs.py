"""Helpers shared by the commands (not a command itself).

Cold start: this module is imported for every ``runner <cmd> --help``, so it imports nothing heavy at
module level (no engine, pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runner.cli import EXIT_BROKER, EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from sqlalchemy.engine import Engine

    from runner.accounts import Account
    from runner.brokers.base import Broker
    from runner.engine.core import RunReport
    from runner.engine.gateway import EngineEvent
    from runner.engine.interrupt import Interrupt
    from runner.engine.killswitch import GuardedBroker
    from runner.engine.risk import RiskConfig
    from runner.journal.store import Journal
    from runner.playbook.models import Playbook


# --- input files: every problem is one `file:line:col: message` line and exit 1 (2 if missing) ----------


def load_playbook(path: str, accounts_file: str | None = None) -> Playbook:
    """Validate first (every error at once, ``file:line:col`` style), then build the typed model.
    The accounts file is checked before the playbook: an invalid one would make every account unknown."""
    from runner.playbook import validate

    check_accounts_file(accounts_file)
    try:
        return validate.load_playbook(path, accounts_file)
    except FileNotFoundError:
        raise CommandError(EXIT_USAGE, f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(EXIT_USAGE, f"{path}: is a directory, expected a playbook file") from None
    except OSError as exc:
        raise CommandError(EXIT_INVALID, f"{path}: cannot read: {exc.strerror}") from None
    except validate.PlaybookInvalid as exc:
        raise CommandError(EXIT_INVALID, [d.format() for d in exc.report.errors]) from None


def check_accounts_file(accounts_file: str | None) -> None:
    """The accounts file (explicit or found) checked by runner.playbook.validate: errors as
    ``file:line:col``."""
    from runner.playbook import validate

    if accounts_file and not os.path.isfile(accounts_file):
        raise CommandError(EXIT_USAGE, f"{accounts_file}: no such accounts file")
    _, report = validate.account_names(accounts_file)
    if report is not None and report.errors:
        raise CommandError(EXIT_INVALID, [d.format() for d in report.errors])


def load_account(name: str, accounts_file: str | None, *, explicit: bool) -> Account:
    """``explicit``: the name came from ``--account`` (unknown is a usage error), else from the playbook."""
    from runner.accounts import find_accounts_file, get_account

    check_accounts_file(accounts_file)
    try:
        return get_account(name, accounts_file)
    except LookupError as exc:
        raise CommandError(EXIT_USAGE if explicit else EXIT_INVALID, str(exc.args[0])) from None
    except ValueError as exc:  # pydantic: a rule the schema does not express
        path = find_accounts_file(accounts_file)
        raise CommandError(EXIT_INVALID, _positioned(str(path), exc, prefix=("accounts",))) from None


def load_risk(path: str | None) -> RiskConfig:
    from runner.engine.risk import ENV_VAR, load_risk_config

    where = path or os.environ.get(ENV_VAR)
    try:
        return load_risk_config(path)
    except FileNotFoundError:
        src = "--risk" if path else f"${ENV_VAR}"
        raise CommandError(EXIT_USAGE, f"{where}: no such risk file ({src})") from None
    except OSError as exc:
        raise CommandError(EXIT_INVALID, f"{where}: cannot read: {exc.strerror}") from None
    except ValueError as exc:  # YamlError (already file:line:col) or pydantic ValidationError
        raise CommandError(EXIT_INVALID, _positioned(str(where), exc)) from None


def _positioned(filename: str, exc: ValueError, prefix: tuple[str, ...] = ()) -> list[str]:
    """``file:line:col: error: message`` lines for a YAML or pydantic error about ``filename``."""
    from runner.playbook.yamlload import YamlError, load_yaml

    if isinstance(exc, YamlError):
        return [f"{exc.filename}:{line}:{col}: error: {msg}" for line, col, msg in exc.errors]
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"{filename}: error: {exc}"]
    try:
        with open(filename, encoding="utf-8") as f:
            loaded = load_yaml(f.read(), filename)
    except (OSError, ValueError):
        loaded = None
    lines = []
    for err in errors():
        loc = [e for e in err.get("loc", ()) if not (isinstance(e, str) and e.startswith("function-"))]
        path = [*prefix, *loc] if prefix and loc[:1] != list(prefix) else loc
        line, col = loaded.mark(path) if loaded is not None else (1, 1)
        where = ".".join(str(p) for p in path)
        lines.append(f"{filename}:{line}:{col}: error: {where + ': ' if where else ''}{err.get('msg', '')}")
    return lines or [f"{filename}: error: {exc}"]


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


def calendar_refusal(
    calendar: str | None, account: Account, now: dt.datetime, *, waits_for_session: bool = False
) -> str | None:
    """Why trading now on ``account`` breaks the playbook's ``calendar`` (None: it does not). Only for
    accounts with ``enforce_calendar``. Fail closed: a day the calendar's data does not cover is refused.
    The session runs from its pre-open start (when it has one) to its close, in the calendar's zone.
    ``waits_for_session``: the run waits for its ``at:`` times, so starting it early on a trading day
    (08:50 for a 09:20 entry) is fine; only a closed day or a finished session is refused."""
    if calendar is None or not account.enforce_calendar:
        return None
    from runner.playbook.yamlload import YamlError
    from runner.trading_calendars import CalendarError, load_calendar

    try:
        cal = load_calendar(calendar)
    except (CalendarError, YamlError) as exc:  # a user's override file ($RUNNER_CALENDARS), positioned
        raise CommandError(EXIT_INVALID, str(exc)) from None
    local = now.astimezone(cal.tz)
    day = local.date()
    name = f"{cal.exchange} calendar {cal.version}"
    if not cal.covers(day):
        return f"{name} has no data for {day} (covers {cal.valid_from}..{cal.valid_to}): not trading blind"
    info = cal.session_info(day)
    if info is None:
        why = cal.holidays.get(day) or f"{local:%A}"
        return f"{cal.exchange} is closed on {day} ({why}) per {name}"
    start = info.pre_open[0] if info.pre_open else info.open
    too_early = local.time() < start and not waits_for_session
    if too_early or local.time() > info.close:
        return (
            f"{local:%H:%M:%S} {cal.timezone} is outside the {cal.exchange} session of {day} "
            f"({start:%H:%M}-{info.close:%H:%M}{', pre-open included' if info.pre_open else ''})"
        )
    return None


def check_calendar(
    calendar: str | None,
    account: Account,
    now: dt.datetime,
    *,
    ignore: bool,
    command: str,
    waits_for_session: bool = False,
) -> None:
    """Refuse (exit 4, nothing sent) outside the calendar; ``ignore`` (--ignore-calendar) trades anyway,
    said loudly on stderr and in the log."""
    why = calendar_refusal(calendar, account, now, waits_for_session=waits_for_session)
    if why is None:
        return
    if ignore:
        import logging

        line = f"WARNING: --ignore-calendar: {why}; trading anyway on account {account.name!r}"
        print(line, file=sys.stderr, flush=True)
        logging.getLogger("runner.calendar").warning("calendar_ignored: %s (account %s)", why, account.name)
        return
    raise CommandError(
        EXIT_REFUSED,
        [
            f"runner {command}: refused: {why}; nothing was sent",
            f"  (account {account.name!r} enforces its calendar; --ignore-calendar overrides, logged)",
        ],
    )


def add_calendar_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-calendar",
        action="store_true",
        help="trade even on a closed day or outside the calendar's session (logged as a warning)",
    )


# --- arguments ----------------------------------------------------------------------------------------


def add_playbook_arguments(parser: argparse.ArgumentParser) -> None:
    """The PLAYBOOK positional with ``--account``/``--accounts`` (run, plan)."""
    parser.add_argument("playbook", metavar="PLAYBOOK", help="playbook YAML file")
    parser.add_argument("--account", help="account name (default: the playbook's `account:`)")
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )


def add_risk_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--risk", metavar="FILE", help="global risk limits YAML (default $RUNNER_RISK)")


def add_busy_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--busy-wait",
        metavar="DURATION",
        type=_busy_wait,
        default=None,
        help="how long a step waits while another run holds the account (e.g. a square-off in progress) "
        "before it is refused, exit 4, nothing sent (default: the playbook's account_busy.wait, else 60s; "
        "0 refuses at once)",
    )


def _busy_wait(text: str) -> float:
    from runner.playbook.models import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_log_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-file", metavar="FILE", help="write JSON log lines here")


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def configure_logging(args: argparse.Namespace, *, progress: bool) -> None:
    import logging

    from runner import logs

    log_file = getattr(args, "log_file", None)
    if log_file:
        stream: TextIO = open(log_file, "a")  # noqa: SIM115 - lives for the process
        logs.configure(json=True, stream=stream, force=True)
    else:
        # With live progress on a TTY the console shows warnings only; otherwise JSON lines on stderr.
        logs.configure(stream=sys.stderr, level=logging.WARNING if progress else logging.INFO, force=True)


# --- terminal -----------------------------------------------------------------------------------------

_COLORS = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1", "cyan": "36"}
OUTCOME_COLOR = {
    "succeeded": "green",
    "failed": "red",
    "refused": "red",
    "timed_out": "yellow",
    "stopped": "yellow",
    "skipped": "dim",
    "running": "cyan",
}


def _columns(stream: TextIO) -> int:
    try:
        return int(os.environ.get("COLUMNS") or os.get_terminal_size(stream.fileno()).columns)
    except (OSError, ValueError, AttributeError):
        return 100


class Term:
    """How to write to one stream: ANSI colour only on a TTY without NO_COLOR / TERM=dumb, symbols only
    when the stream's encoding has them, and the width for truncating long lines (None: never)."""

    def __init__(self, stream: TextIO) -> None:
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.color = self.tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.width: int | None = _columns(stream) if self.tty else None
        try:
            "▶✔✘•".encode(getattr(stream, "encoding", None) or "ascii")
            self.unicode = True
        except (UnicodeEncodeError, LookupError):
            self.unicode = False

    def paint(self, text: str, color: str | None) -> str:
        if not self.color or not color or not text:
            return text
        return f"\x1b[{_COLORS[color]}m{text}\x1b[0m"

    def glyph(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain

    def fit(self, line: str, used: int = 0) -> str:
        """``line`` cut to the terminal width (``used``: columns already taken by invisible-free text)."""
        room = None if self.width is None else self.width - used
        if room is None or len(line) <= room or room < 10:
            return line
        return line[: room - 1] + self.glyph("…", "~")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO,
    *,
    indent: str = "",
    colors: Sequence[Callable[[str], str | None] | None] = (),
) -> None:
    """Left-aligned columns. Colour (per column, chosen by cell value) is applied after padding so ANSI
    codes never skew alignment. Nothing is cut: the last column may wrap, but it is the detail ops need."""
    term = Term(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    head = indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(term.paint(head.rstrip(), "bold"), file=out)
    for r in rows:
        cells = []
        for i, (c, w) in enumerate(zip(r, widths, strict=True)):
            pick = colors[i] if i < len(colors) else None
            cells.append(term.paint(c, pick(c) if pick else None) + " " * (w - len(c)))
        print((indent + "  ".join(cells)).rstrip(), file=out)


def local(at: dt.datetime | None, tz: ZoneInfo) -> str:
    return "-" if at is None else at.astimezone(tz).strftime("%H:%M:%S.%f")[:-3]


def progress_printer(
    tz: ZoneInfo, out: TextIO | None = None, *, orders: bool = True
) -> Callable[[EngineEvent], None]:
    """Live progress lines (stderr by default: stdout is for the result, possibly JSON)."""
    stream = out or sys.stderr
    term = Term(stream)
    start, ok, bad, other = (term.glyph(*g) for g in (("▶", ">"), ("✔", "+"), ("✘", "x"), ("•", "-")))

    def emit(t: str, text: str) -> None:
        print(f"{term.paint(t, 'dim')}  {term.fit(text, len(t) + 2)}", file=stream, flush=True)

    def show(e: EngineEvent) -> None:
        t = local(e.at, tz)
        if e.kind == "step_started":
            emit(t, f"{start} {e.step_id}: {e.message}")
        elif e.kind == "step_finished":
            outcome = e.outcome or "?"
            mark = ok if outcome == "succeeded" else bad if outcome in ("failed", "refused") else other
            color = OUTCOME_COLOR.get(outcome)
            line = term.fit(f"{e.step_id} {outcome}: {e.message}", len(t) + 4)
            head, _, rest = line.partition(" ")
            word, _, tail = rest.partition(":")
            print(
                f"{term.paint(t, 'dim')}  {term.paint(mark, color)} {head} {term.paint(word, color)}:{tail}",
                file=stream,
                flush=True,
            )
        elif e.kind == "order" and orders and e.order is not None:
            o = e.order
            status = o.status.value
            if o.filled_quantity and o.filled_quantity < o.quantity:
                status += f" {o.filled_quantity}/{o.quantity}"
            if o.filled_quantity and o.average_price is not None:
                status += f" @ {o.average_price}"
            emit(t, f"    {o.client_order_id}  {o.side.value} {o.quantity} {o.instrument.key}  {status}")
        elif e.kind == "note":
            emit(t, f"    note: {e.message}")
        elif e.kind in ("run_started", "run_finished"):
            emit(t, f"run {e.message}")

    return show


def deduplicating(show: Callable[[EngineEvent], None]) -> Callable[[EngineEvent], None]:
    """Print an order line only when its status or fill changes (polling re-reads the same state)."""
    seen: dict[str, tuple[str, int]] = {}

    def inner(e: EngineEvent) -> None:
        if e.kind == "order" and e.order is not None:
            key = (e.order.status.value, e.order.filled_quantity)
            if seen.get(e.order.client_order_id) == key:
                return
            seen[e.order.client_order_id] = key
        show(e)

    return inner


# --- results ------------------------------------------------------------------------------------------


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
    term = Term(out)
    status = report.status.value
    print(
        f"\nrun {report.run_id} ({report.playbook} on {report.account}): "
        f"{term.paint(status, OUTCOME_COLOR.get(status))}{' (resumed)' if report.resumed else ''}",
        file=out,
    )
    rows = [(s.step_id, s.kind, s.outcome.value, local(s.finished_at, tz), s.message) for s in report.steps]
    table(("STEP", "KIND", "OUTCOME", "AT", "DETAIL"), rows, out, colors=(None, None, OUTCOME_COLOR.get))


def print_json(value: Any, out: TextIO | None = None) -> None:
    import json

    out = out or sys.stdout
    print(json.dumps(value, indent=2, default=str, sort_keys=True), file=out)


def exit_code(report: RunReport) -> int:
    status = report.status.value
    if status == "failed":
        return EXIT_FAILED
    if status == "refused":
        return EXIT_REFUSED
    return EXIT_OK
