"""The semantic checks on a schema-valid playbook, one concern per module, run in the order of :data:`CHECKS`.

Each check is ``check(doc, sink)``: it reads :class:`~runner.playbook.checks.doc.Doc` (the data plus indexes
built
once) and reports through :class:`~runner.playbook.checks.sink.Sink`. The report is sorted by position only,
so the list order decides the order of diagnostics that share a position: keep it when adding checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from runner.playbook.checks import (
    capabilities,
    durations,
    groups,
    header,
    instruments,
    modify,
    orders,
    references,
    shapes,
    spreads,
    timing,
)
from runner.playbook.checks.doc import AccountNames, Doc
from runner.playbook.checks.sink import Sink
from runner.playbook.yamlload import Loaded

Check = Callable[[Doc, Sink], None]

CHECKS: tuple[Check, ...] = (
    header.check_timezone,
    header.check_schedule,
    header.check_account,
    capabilities.check_broker_capabilities,
    capabilities.check_inline_sizes,
    header.check_has_limits,
    instruments.check_instruments,
    instruments.check_allowed_instruments,
    instruments.check_underlyings,
    references.check_step_ids,
    references.check_order_refs,
    orders.check_orders,
    spreads.check_spreads,
    modify.check_modify_steps,
    shapes.check_cancel_steps,
    instruments.check_filters,
    shapes.check_wait_steps,
    shapes.check_square_off_steps,
    timing.check_step_times,
    timing.check_time_order,
    durations.check_durations,
)


def run_checks(sink: Sink, data: dict[str, Any], accounts: AccountNames | None) -> None:
    data, paths, member = groups.flatten(data)
    loaded = sink.loaded
    if member:  # parallel groups: checks see the members in place, positions stay the file's
        sink.loaded = cast(Loaded, groups.GroupedMarks(loaded, paths))
    try:
        doc = Doc(data, accounts, groups={i: group for i, (_, group) in member.items()})
        for check in CHECKS:
            check(doc, sink)
        groups.check_member_refs(doc, sink, member)
    finally:
        sink.loaded = loaded
