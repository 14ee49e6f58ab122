"""The PostgreSQL suites re-run test modules of other packages against a server; put those packages on
the path so a run of tests/pg alone collects (pytest's prepend mode only adds a directory once one of its
files is collected)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _sub in ("brokers/paper", "engine", "journal", "daemon"):
    _path = str(_TESTS / _sub)
    if _path not in sys.path:
        sys.path.append(_path)
