"""How ``plan``, ``rehearse``, ``run`` and ``show`` present a ``parallel`` group: each member carries its
group's label (id and timing; JSON: a ``group`` key on the member), and the text tables put one row for
the group with its members indented under it (:func:`nest`).

Cold start: imported by runner.commands.results, so nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MEMBER_INDENT = "  "


@dataclass(frozen=True, slots=True)
class GroupLabel:
    id: str
    timing: str  # as planned ("at 09:20"), or, from the journal, when it started

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "timing": self.timing}

    @classmethod
    def from_dict(cls, d: Any) -> GroupLabel | None:
        return None if not isinstance(d, dict) else cls(str(d["id"]), str(d.get("timing", "")))


def label_of(pb: Any, step_id: str) -> GroupLabel | None:
    """The label of the group ``step_id`` is a member of in ``pb``, or None."""
    group = pb.group_of(step_id)
    if group is None:
        return None
    from runner.plan.planner import timing_text

    return GroupLabel(group.id, timing_text(group))


def nest(
    rows: Sequence[tuple[str, ...]], labels: Sequence[GroupLabel | None], *, timing_col: int
) -> list[tuple[str, ...]]:
    """``rows`` (first cell: the step id) with a row for each group (id, kind ``parallel``, its timing in
    column ``timing_col``) before its first member, and the members' ids indented under it."""
    out: list[tuple[str, ...]] = []
    current: str | None = None
    for row, label in zip(rows, labels, strict=True):
        if label is None:
            current = None
            out.append(row)
            continue
        if label.id != current:
            header = ["" for _ in row]
            header[0], header[1], header[timing_col] = label.id, "parallel", label.timing
            out.append(tuple(header))
            current = label.id
        out.append((MEMBER_INDENT + row[0], *row[1:]))
    return out
