"""``runner schema``: print the playbook JSON Schema (``--accounts``: the accounts file schema;
``--alerts``: the alerts file schema).

Editors use it for completion: ``# yaml-language-server: $schema=<path or URL>`` at the top of a playbook.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
  runner schema > playbook.schema.json
  runner schema --accounts > accounts.schema.json
  runner schema --alerts > alerts.schema.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", action="store_true", help="print the accounts file schema instead")
    parser.add_argument("--alerts", action="store_true", help="print the alerts file schema instead")
    parser.add_argument("--json", action="store_true", help="accepted for uniformity: the output is JSON")


def run(args: argparse.Namespace) -> int:
    from runner.playbook.validate import ACCOUNTS_SCHEMA, ALERTS_SCHEMA, PLAYBOOK_SCHEMA, schema_text

    name = ACCOUNTS_SCHEMA if args.accounts else ALERTS_SCHEMA if args.alerts else PLAYBOOK_SCHEMA
    sys.stdout.write(schema_text(name))
    return 0
