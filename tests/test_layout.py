"""The tree's shape (issue 12): rules a move or a new module could quietly break."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "runner"


def test_few_modules_directly_in_runner() -> None:
    modules = sorted(p.name for p in RUNNER.glob("*.py"))
    assert len(modules) <= 15, modules


def test_test_basenames_are_unique() -> None:
    """Test folders have no __init__.py (pytest's default import mode imports a test by its basename)."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_runtime_code_never_reads_tests() -> None:
    """Data a simulator needs ships inside the package; nothing under runner/ names the tests folder."""
    offenders = []
    for path in RUNNER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in ("tests", "fixtures"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_package_inits_stay_tiny() -> None:
    """Cold start: importing a package must not import its modules (``runner validate`` must not pull
    in the engine), so package __init__ files hold at most a docstring and constants."""
    heavy = []
    for init in RUNNER.rglob("__init__.py"):
        if init.parent.name == "migrations":
            continue  # the migration runner itself; imported only by the journal
        body = ast.parse(init.read_text()).body
        imports = [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)]
        if any(not (isinstance(n, ast.ImportFrom) and n.module == "__future__") for n in imports):
            heavy.append(str(init.relative_to(ROOT)))
    assert heavy == []


def test_packaged_schemas_match_the_published_ones() -> None:
    """schemas/ (what editors point at) and runner/data/schemas (what the wheel ships) hold the same bytes."""
    published = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    packaged = sorted(p.name for p in (RUNNER / "data" / "schemas").glob("*.json"))
    assert published == packaged and published
    for name in published:
        packaged_bytes = (RUNNER / "data" / "schemas" / name).read_bytes()
        assert (ROOT / "schemas" / name).read_bytes() == packaged_bytes, f"copy schemas/{name} to the package"
