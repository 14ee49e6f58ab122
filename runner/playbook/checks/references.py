"""Step ids are unique, and references to earlier orders (``entry``, ``spread.leg``) resolve backwards."""

from __future__ import annotations

from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink, did_you_mean


def check_step_ids(doc: Doc, sink: Sink) -> None:
    first: dict[str, int] = {}
    for i, step in enumerate(doc.steps):
        sid = step["id"]
        if sid in first:
            line, col = sink.loaded.mark(("steps", first[sid], "id"))
            sink.add(
                ("steps", i, "id"),
                f"duplicate step id '{sid}' (first used at {line}:{col})",
                "step ids must be unique: orders are named after them",
            )
            continue
        first[sid] = i
        legs: set[str] = set()
        for j, leg in enumerate(step.get("legs", [])):
            if "id" not in leg:
                continue
            if leg["id"] in legs:
                sink.add(("steps", i, "legs", j, "id"), f"duplicate leg id '{leg['id']}' in spread '{sid}'")
            legs.add(leg["id"])


def check_order_refs(doc: Doc, sink: Sink) -> None:
    """``order:`` of modify (one order or leg), cancel and wait (a whole spread allowed)."""
    for i, step in enumerate(doc.steps):
        if step["kind"] in ("modify", "cancel", "wait") and "order" in step:
            whole = step["kind"] != "modify"
            check_ref(doc, sink, ("steps", i, "order"), step["order"], i, whole_spread=whole)


def check_ref(doc: Doc, sink: Sink, path: Path, ref: str, here: int, *, whole_spread: bool) -> None:
    step_id, _, leg_id = ref.partition(".")
    info = doc.by_id.get(step_id)
    if info is None:
        orders = doc.orders_before(here)
        guess = did_you_mean(step_id, orders)
        sink.add(
            path,
            f"unknown order '{ref}'",
            f"did you mean '{guess}'?"
            if guess
            else f"refer to an earlier place or spread step ({', '.join(orders) or 'none so far'})",
        )
        return
    if info.index >= here:
        if doc.same_group(info.index, here):
            return  # one error, not two: groups.check_member_refs says why (members run at once)
        line, col = sink.loaded.mark(("steps", info.index))
        sink.add(
            path,
            f"order '{ref}' refers to step '{step_id}' at {line}:{col}, which does not come before this step",
            "steps run top to bottom: move this step after it",
        )
        return
    if info.kind not in ("place", "spread"):
        orders = doc.orders_before(here)
        sink.add(
            path,
            f"'{step_id}' is a {info.kind} step, not an order",
            f"refer to a place or spread step ({', '.join(orders) or 'none so far'})",
        )
        return
    if info.kind == "place" and leg_id:
        sink.add(path, f"'{step_id}' is a place step and has no legs", f"write order: {step_id}")
    elif info.kind == "spread" and not leg_id and not whole_spread:
        legs = ", ".join(f"{step_id}.{leg}" for leg in info.legs) or f"give the legs of '{step_id}' ids"
        sink.add(path, f"'{step_id}' is a spread: name one leg", f"e.g. {legs}")
    elif info.kind == "spread" and leg_id and leg_id not in info.legs:
        guess = did_you_mean(leg_id, info.legs)
        sink.add(
            path,
            f"spread '{step_id}' has no leg '{leg_id}'",
            f"did you mean '{step_id}.{guess}'?"
            if guess
            else f"legs with ids: {', '.join(info.legs) or 'none (add id: to the legs)'}",
        )
