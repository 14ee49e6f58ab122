"""Command line entry point: ``main(argv) -> int``.

Each subcommand lives in ``runner/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, so ``runner --help`` stays fast.

Exit codes (stable, for scripts):
  0  success
  1  invalid input (playbook or accounts file failed validation)
  2  usage error
  3  a step failed / the run did not reach its goal
  4  refused: halted, drifted plan, risk limits
  5  broker or environment error (cannot connect, credentials missing)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_REFUSED, EXIT_BROKER = 0, 1, 2, 3, 4, 5

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
}

EPILOG = """exit codes: 0 ok, 1 invalid input, 2 usage error, 3 step failed, 4 refused,
5 broker/environment error
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
    parser = argparse.ArgumentParser(prog=f"runner {command}", description=help_text, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    rest = list(args_list)
    rest.remove(command)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
