"""``parallel`` groups: the checks see the members in place of their group (paths translated back to the
file), and a member may not refer to another member of its group (they run at the same time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink
from runner.playbook.yamlload import Loaded

PathElem = str | int


def flatten(data: dict[str, Any]) -> tuple[dict[str, Any], list[Path], dict[int, tuple[int, str]]]:
    """The document with every group's members in its place, each flat step's path in the file, and
    flat index -> (the group's index in the file, its id) for members."""
    flat: list[Any] = []
    paths: list[Path] = []
    member: dict[int, tuple[int, str]] = {}
    for i, step in enumerate(data["steps"]):
        if isinstance(step, dict) and step.get("kind") == "parallel":
            for j, m in enumerate(step["steps"]):
                member[len(flat)] = (i, step["id"])
                flat.append(m)
                paths.append(("steps", i, "steps", j))
        else:
            flat.append(step)
            paths.append(("steps", i))
    return {**data, "steps": flat}, paths, member


@dataclass
class GroupedMarks:
    """Positions for paths into the flattened steps: ``("steps", i, ...)`` is the i-th flat step."""

    loaded: Loaded
    paths: list[Path]

    @property
    def filename(self) -> str:
        return self.loaded.filename

    def _real(self, path: Sequence[PathElem]) -> list[PathElem]:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int) and path[1] < len(self.paths):
            return [*self.paths[path[1]], *path[2:]]
        return list(path)

    def mark(self, path: Sequence[PathElem]) -> tuple[int, int]:
        return self.loaded.mark(self._real(path))

    def key_mark(self, path: Sequence[PathElem]) -> tuple[int, int]:
        return self.loaded.key_mark(self._real(path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loaded, name)


def check_member_refs(doc: Doc, sink: Sink, member: dict[int, tuple[int, str]]) -> None:
    """``order:`` naming a step of the same group: both run at once, so the order may not exist yet."""
    for i, (_, group) in member.items():
        ref = doc.steps[i].get("order")
        if not isinstance(ref, str):
            continue
        info = doc.by_id.get(ref.partition(".")[0])
        if info is not None and member.get(info.index, (None, None))[1] == group:
            sink.add(
                ("steps", i, "order"),
                f"'{ref}' is in the same parallel group '{group}' as this step: members run at the same "
                "time, so its order may not exist yet",
                f"move step '{ref.partition('.')[0]}' before the group '{group}'",
            )
