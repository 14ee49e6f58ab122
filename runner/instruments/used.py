"""The instruments a set of playbooks name (aliases and inline specs), for the contract-change check."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from runner.model import Instrument


def playbook_files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def _walk(value: Any) -> Iterator[Instrument]:
    from pydantic import BaseModel

    from runner.playbook.models import InstrumentSpec

    if isinstance(value, InstrumentSpec):
        yield value.to_instrument()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk(v)


def instruments_in(paths: Iterable[str | Path], accounts_file: str | None = None) -> list[Instrument]:
    """Every instrument the playbooks under ``paths`` name; an invalid playbook raises PlaybookInvalid."""
    from runner.playbook.validate import load_playbook

    seen: dict[str, Instrument] = {}
    for path in playbook_files(paths):
        for inst in _walk(load_playbook(path, accounts_file)):
            seen.setdefault(inst.key, inst)
    return list(seen.values())
