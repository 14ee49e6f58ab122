"""``runner validate PATH...``: check playbooks (files or directories) and report every problem.

Output is compiler style (``file:line:col: error: message``) so editors and CI jump to it, or JSON with
``--format json``. Exit 0 when everything is valid, 1 when anything is invalid, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys

EXAMPLES = """\
  runner validate playbooks/                      # every *.yaml / *.yml below, compiler-style errors
  runner validate --strict --json pb.yaml | jq '.reports[].diagnostics'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="playbook files or directories (*.yaml, *.yml)"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    parser.add_argument(
        "--accounts",
        metavar="FILE",
        help="accounts file (default: $RUNNER_ACCOUNTS, ./accounts.yaml, ~/.config/runner/accounts.yaml)",
    )
    parser.add_argument(
        "-j", "--jobs", type=int, default=None, metavar="N", help="worker processes (default: auto)"
    )
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="text: print problems only, no summary")


def _use_color(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def run(args: argparse.Namespace) -> int:
    from runner.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE

    missing = [p for p in args.paths if not os.path.exists(p)]
    for path in missing:
        print(f"runner validate: error: no such file or directory: {path}", file=sys.stderr)
    if args.accounts and not os.path.isfile(args.accounts):  # a directory too: same words as `run`
        print(f"runner validate: error: {args.accounts}: no such accounts file", file=sys.stderr)
        missing.append(args.accounts)
    if missing:
        return EXIT_USAGE

    from runner.playbook.validate import expand_paths, validate_paths

    if not any(True for _ in expand_paths(args.paths)):
        print(
            "runner validate: error: no *.yaml or *.yml files found in " + ", ".join(args.paths),
            file=sys.stderr,
        )
        return EXIT_USAGE
    reports = validate_paths(args.paths, accounts_file=args.accounts, jobs=args.jobs)
    failed = [r for r in reports if not r.ok or (args.strict and r.warnings)]

    if args.format == "json":
        import json

        doc = {
            "valid": not failed,
            "files": len(reports),
            "errors": sum(len(r.errors) for r in reports),
            "warnings": sum(len(r.warnings) for r in reports),
            "reports": [r.to_json() for r in reports],
        }
        print(json.dumps(doc, indent=2))
    else:
        color = _use_color(sys.stdout)
        for report in reports:
            for diag in report.diagnostics:
                print(diag.format(color))
        if not args.quiet:
            errors = sum(len(r.errors) for r in reports)
            warnings = sum(len(r.warnings) for r in reports)
            word = "file" if len(reports) == 1 else "files"
            if failed:
                counts = f"{errors} error(s), {warnings} warning(s)"
                summary = f"{len(failed)} of {len(reports)} {word} invalid: {counts}"
            else:
                summary = f"{len(reports)} {word} valid" + (f", {warnings} warning(s)" if warnings else "")
            print(summary, file=sys.stdout)
    return EXIT_INVALID if failed else EXIT_OK
