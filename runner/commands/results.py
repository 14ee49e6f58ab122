"""A finished run as the commands report it: JSON, the summary table, the exit code.

Cold start: imported for every ``runner <cmd> --help``, so nothing heavy at module level (no engine,
pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from runner.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from runner.commands.terminal import OUTCOME_COLOR, Term, local, table

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from runner.engine.core import RunReport


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
                **({"group": s.group.to_dict()} if s.group is not None else {}),
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
    from runner.plan.groups import nest
    from runner.timefmt import label

    flat = [(s.step_id, s.kind, s.outcome.value, local(s.finished_at, tz), s.message) for s in report.steps]
    rows = nest(flat, [s.group for s in report.steps], timing_col=4)  # a group's timing as DETAIL
    first = next((s.finished_at for s in report.steps if s.finished_at), None)
    at = f"AT ({label(tz, first)})"  # times of day in the playbook's zone: name it
    table(("STEP", "KIND", "OUTCOME", at, "DETAIL"), rows, out, colors=(None, None, OUTCOME_COLOR.get))


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
