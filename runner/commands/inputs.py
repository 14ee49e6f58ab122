"""Input files for the commands: playbook, accounts, risk limits and the playbook's calendar; every
problem is one ``file:line:col: message`` line and exit 1 (2 if missing).

Cold start: imported for every ``runner <cmd> --help``, so nothing heavy at module level (no engine,
pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from runner.cli import EXIT_INVALID, EXIT_REFUSED, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    import datetime as dt

    from runner.accounts import Account
    from runner.engine.risk import RiskConfig
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
