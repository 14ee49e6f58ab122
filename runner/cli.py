"""Command line entry point: ``main(argv) -> int``.

Each subcommand lives in ``runner/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, so ``runner --help`` stays fast.

Exit codes (stable, for scripts):
  0  success
  1  invalid input: a playbook, accounts, risk or plan file failed validation (an unknown ``account:``
     inside a playbook too: the file's content is wrong, and it is reported at file:line:col)
  2  usage error: bad arguments, a named file, run or account (on the command line) does not exist
  3  a step failed / the run did not reach its goal
  4  refused: halted, drifted plan, risk limits
  5  broker or environment error (cannot connect, credentials missing, journal database locked)
  70 internal error (a bug): one line on stderr; RUNNER_DEBUG=1 prints the traceback
  130 interrupted (Ctrl-C)

Expected failures never print a traceback: a command raises :class:`CommandError` (or lets a known
exception through, see ``_classify``) and ``main`` prints one ``runner <cmd>: message`` line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO, cast

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_REFUSED, EXIT_BROKER = 0, 1, 2, 3, 4, 5
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), as EXIT_INTERRUPTED is SIGINT
DEBUG_ENV = "RUNNER_DEBUG"


class CommandError(Exception):
    """An expected failure: ``lines`` go to stderr as they are, the process exits with ``code``."""

    def __init__(self, code: int, lines: str | Sequence[str]) -> None:
        self.code = code
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


# name -> (one-line help, module). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("check playbooks against the schema and semantic rules", "runner.commands.validate"),
    "schema": ("print the playbook (or accounts) JSON Schema", "runner.commands.schema"),
    "run": ("execute a playbook now", "runner.commands.run"),
    "plan": ("show the broker calls a run would make, change nothing", "runner.commands.plan"),
    "apply": ("execute a saved plan, refusing if live state drifted", "runner.commands.apply"),
    "rehearse": ("run a whole day's playbook on paper in virtual time", "runner.commands.rehearse"),
    "history": ("list past runs", "runner.commands.history"),
    "show": ("show one run: steps, orders, fills, errors", "runner.commands.show"),
    "serve": ("daemon: schedule every playbook in a directory", "runner.commands.serve"),
    "status": ("next fires, running steps, last outcomes, halt state", "runner.commands.status"),
    "halt": ("kill switch: stop new orders and cancel open ones", "runner.commands.halt"),
    "resume": ("lift a halt", "runner.commands.resume"),
    "sim": ("start a loopback broker simulator", "runner.commands.sim"),
    "db": ("journal schema: show its revision, upgrade it", "runner.commands.db"),
    "alerts": ("alerts: send a test message to every target", "runner.commands.alerts"),
    "check": ("go/no-go before the open: login, master, instruments, rate budget", "runner.commands.check"),
    "instruments": ("sync and search the brokers' instrument masters", "runner.commands.instruments"),
    "positions": ("positions and P&L per account and instrument", "runner.commands.positions"),
}

EPILOG = """exit codes: 0 ok, 1 invalid input, 2 usage error, 3 step failed, 4 refused,
5 broker/environment error, 70 internal error (RUNNER_DEBUG=1 for the traceback)
docs: README.md; schema: `runner schema`"""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner",
        description="Declarative, YAML-driven order automation: validate, plan, run and schedule playbooks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = _top_parser()
        if "--version" in args_list:
            from importlib.metadata import version

            print(f"runner {version('runner')}")
            return EXIT_OK
        if command is not None:
            parser.print_usage(sys.stderr)
            print(f"runner: error: unknown command {command!r}", file=sys.stderr)
            return EXIT_USAGE
        if not args_list or "-h" in args_list or "--help" in args_list:
            parser.print_help()
            return EXIT_OK if args_list else EXIT_USAGE
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    help_text, module_name = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"runner {command}",
        description=help_text,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    if parser.description == help_text and module.__doc__:  # the module's docstring says more
        parser.description = module.__doc__
    parser.description = plain_text(parser.description or help_text)
    examples = getattr(module, "EXAMPLES", "")
    if examples:
        parser.epilog = "examples:\n" + examples.strip("\n") + "\n\n" + EPILOG
    rest = list(args_list)
    rest.remove(command)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    from runner.scrub import ScrubbingStream

    # Every line a command prints (output, error lines, RUNNER_DEBUG tracebacks) is scrubbed of the
    # secret values resolved meanwhile: one choke point instead of one per print.
    out, err = sys.stdout, sys.stderr
    pipe = _PipeWatch(out)
    sys.stdout = cast(TextIO, ScrubbingStream(cast(TextIO, pipe)))
    sys.stderr = cast(TextIO, ScrubbingStream(err))
    try:
        code = int(module.run(args))
        sys.stdout.flush()  # here, not at exit: a reader gone meanwhile is seen by the handler below
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and pipe.broken:  # `runner history | head -3`: not an error
            _silence_stdout(out)
            return EXIT_OK
        code, lines = _classify(exc)
        if os.environ.get(DEBUG_ENV):
            import traceback

            traceback.print_exc()
        elif code == EXIT_INTERNAL:
            lines.append(f"this is a bug; run with {DEBUG_ENV}=1 for the traceback")
        for line in lines:  # compiler-style `file:line:col: ...` lines stay as they are, for editors
            print(line if _POSITIONED.match(line) else f"runner {command}: {line}", file=sys.stderr)
        return code
    finally:
        sys.stdout, sys.stderr = out, err


class _PipeWatch:
    """Stdout, noting when its reader went away, so a broken pipe on stdout (the output's reader quit
    early, as ``head`` does) is told apart from one on a broker's socket (a real error)."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner
        self.broken = False

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except BrokenPipeError:
            self.broken = True
            raise

    def flush(self) -> None:
        try:
            self._inner.flush()
        except BrokenPipeError:
            self.broken = True
            raise

    def __getattr__(self, name: str) -> object:  # isatty, fileno, encoding, ...
        return getattr(self._inner, name)


def _silence_stdout(out: TextIO) -> None:
    """Point stdout's descriptor at /dev/null: what is still buffered goes nowhere at exit instead of
    raising again (Python's documented way, see the ``signal`` module's note on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture): nothing left to flush there
        pass


_POSITIONED = re.compile(r"[^\s:]+:\d+:\d+: ")
_DOUBLE_TICKS = re.compile(r"``(.+?)``", re.S)
_COMMAND_PREFIX = re.compile(r"\A\s*``runner [^`]*``(?: \[[^]]*\])?:\s*")


def plain_text(doc: str) -> str:
    """A module docstring as help text: no leading ``runner cmd ARGS``: (usage shows it already), reST
    ``literals`` shown as `literals`, paragraphs re-flowed to the terminal (indented blocks kept)."""
    import textwrap

    doc = _COMMAND_PREFIX.sub("", doc)
    head, _, tail = doc.partition("\n")
    doc = (head.strip() + ("\n" + textwrap.dedent(tail) if tail else "")).strip()
    doc = _DOUBLE_TICKS.sub(r"`\1`", doc[:1].upper() + doc[1:])
    try:
        width = min(os.get_terminal_size(sys.stdout.fileno()).columns - 2, 100)
    except (OSError, ValueError, AttributeError):
        width = 100
    paragraphs = []
    for para in doc.split("\n\n"):
        if any(line.startswith(" ") for line in para.splitlines()):
            paragraphs.append(para)
        else:
            paragraphs.append(textwrap.fill(" ".join(para.split()), max(width, 40), break_on_hyphens=False))
    return "\n\n".join(paragraphs)


def _classify(exc: BaseException) -> tuple[int, list[str]]:
    """Exit code and message lines for an exception that escaped a command."""
    if isinstance(exc, CommandError):
        return exc.code, list(exc.lines)
    errors = sys.modules.get("runner.errors")
    if errors is not None and isinstance(exc, errors.BrokerError):
        return EXIT_BROKER, [f"broker error: {type(exc).__name__}: {exc}"]
    journal = sys.modules.get("runner.journal.errors")
    if journal is not None and isinstance(exc, journal.RunBusy):  # one run id, one process
        return EXIT_REFUSED, [str(exc)]
    migrations = sys.modules.get("runner.journal.migrations")
    if migrations is not None and isinstance(exc, migrations.SchemaTooNew):  # a newer release's journal
        return EXIT_BROKER, [str(exc)]
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.ArgumentError):
        return EXIT_USAGE, [f"journal database URL: {exc}"]
    if sa_exc is not None or "sqlite3" in sys.modules or "psycopg" in sys.modules:
        from runner.journal.db import database_problem  # raw DBAPI errors too: disk full, locked, read-only

        problem = database_problem(exc)
        if problem is not None:
            return EXIT_BROKER, [f"journal database: {problem}"]
    if type(exc) is LookupError:  # a credential or account lookup (KeyError/IndexError are bugs)
        return EXIT_BROKER, [str(exc)]
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return EXIT_USAGE, [f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)]
    if isinstance(exc, OSError):  # refused connections, unreachable hosts, permissions, ports in use
        return EXIT_BROKER, [f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"]
    return EXIT_INTERNAL, [f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]]


if __name__ == "__main__":
    raise SystemExit(main())
