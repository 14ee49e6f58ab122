"""Fixtures: the loopback master server (tests/helpers/instruments.py) and a journal under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.instruments import MasterServer, master_csv


@pytest.fixture
def server() -> Iterator[MasterServer]:
    s = MasterServer()
    s.files["/nse_fo.csv"] = master_csv()
    yield s
    s.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'runner.db'}"
