"""The status page in a real headless browser (Debian's chromium driven by Playwright) against a real
``runner serve --http`` process: it renders, names every playbook, changes after a fire, shows the halt
banner, links to a run page; and the token rule as a browser meets it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.web import PLAYBOOKS, Served, chromium_or_skip, serving, wait_for

from runner.engine.killswitch import ControlStore, Mode
from runner.journal.fires import FireState, FireStore


@pytest.fixture
def browser() -> Iterator[Any]:
    path = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as s:
        yield s


def fires_shown(page: Any) -> int:
    found = re.search(r"Fires in the last 24 hours \((\d+)\)", page.inner_text("body"))
    assert found, "the page has no fires section"
    return int(found.group(1))


def succeeded(served: Served) -> int:
    return sum(1 for r in FireStore(served.engine, "t").history() if r.state is FireState.SUCCEEDED)


def test_page_names_every_playbook_and_changes_after_a_fire(served: Served, browser: Any) -> None:
    page = browser.new_page()
    page.goto(served.url)
    assert page.title() == "runner status"
    wait_for(
        "every playbook scheduled",
        lambda: page.reload() is not None and "holiday-check" in page.inner_text("body"),
    )
    text = page.inner_text("body")
    for name in PLAYBOOKS:
        assert name in text
    # each next fire in its own zone, named; a calendar's closed days of the coming week; its coverage
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d America/New_York", text)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Asia/Kolkata", text)
    assert re.search(r"\d{4}-\d\d-\d\d \((closed|not covered|[^)]+)\)", text)  # 7 days hold a weekend
    assert "kill switch: normal" in text and "master snapshot age: n/a" in text
    before = fires_shown(page)  # may count a fire still running: wait for a new one to be shown
    seen = succeeded(served)
    wait_for("another fire", lambda: succeeded(served) > seen)
    wait_for("the page to show it", lambda: page.reload() is not None and fires_shown(page) > before)
    # a finished run's link leads to its run page: steps, the order with its status, the fill
    page.locator("tr", has_text="run ").filter(has_text="succeeded").first.locator("a").click()
    assert "/run/" in page.url
    body = page.inner_text("body")
    assert "Steps" in body and "place" in body and "NSE RELIANCE" in body
    assert re.search(r"placed \w+ .*filled 1 @ \d", body), body  # the order's price history
    assert re.search(r"\d\d:\d\d:\d\d Asia/Kolkata", body)  # times name their zone


def test_halt_banner(served: Served, browser: Any) -> None:
    page = browser.new_page()
    page.goto(served.url)
    assert page.locator("#halt-banner").count() == 0
    ControlStore(served.engine).set(Mode.HALT, "desk says stop", "pytest", dt.datetime.now(dt.UTC))
    page.reload()
    banner = page.locator("#halt-banner")
    assert banner.count() == 1
    assert "HALTED" in banner.inner_text() and "desk says stop" in banner.inner_text()


def test_browser_needs_the_token_once(tmp_path: Path, browser: Any) -> None:
    with serving(tmp_path, {"RUNNER_HTTP_TOKEN": "s3cret-token"}) as s:
        page = browser.new_page()
        response = page.goto(s.url)
        assert response is not None and response.status == 401
        response = page.goto(s.url + "?token=s3cret-token")
        assert response is not None and response.status == 200
        response = page.goto(s.url + "api/status")  # the cookie carries it from here on
        assert response is not None and response.status == 200
        s.proc.terminate()
        _, err = s.proc.communicate(timeout=30)
        assert "s3cret-token" not in err  # never logged
