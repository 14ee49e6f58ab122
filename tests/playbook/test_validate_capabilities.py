"""``runner validate --accounts``: what a playbook needs of its account's broker, and the broker's required
credentials, from the static broker descriptions (no login)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runner.brokers import descriptions
from runner.cli import main
from runner.model import OrderType

ROOT = Path(__file__).resolve().parents[2]
# The shipped spread, made native (it ships with mode: auto, which every broker can run).
SPREAD = (ROOT / "playbooks" / "bull_call_spread.yaml").read_text().replace("mode: auto", "mode: native")

# The spread as shipped before rolling instruments: fixed contracts with inline lot/tick sizes.
FIXED_SPREAD = (Path(__file__).parent / "fixtures" / "fixed_bull_call_spread.yaml").read_text()

KOTAK_FULL = """\
    broker: kotak_neo
    credentials:
      consumer_key: {env: K_KEY}
      mobile_number: {env: K_MOBILE}
      ucc: {env: K_UCC}
      totp_secret: {file: /run/secrets/k_totp}
      mpin: {env: K_MPIN}
"""
ODIN_NO_FEED = """\
    broker: odin
    endpoints: {base_url: "http://127.0.0.1:1"}
    credentials:
      x_api_key: {env: O_X}
      user_id: {env: O_USER}
      password: {env: O_PASS}
      api_key: {env: O_KEY}
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def _files(tmp_path: Path, account_body: str, playbook: str) -> tuple[Path, Path]:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("version: 1\naccounts:\n  desk:\n" + account_body)
    book = tmp_path / "book.yaml"
    book.write_text(playbook.replace("timezone:", "account: desk\ntimezone:", 1))
    return accounts, book


def _validate(accounts: Path, book: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", "--accounts", str(accounts), str(book)])
    return code, capsys.readouterr().out


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(text))


def test_native_spread_on_a_broker_without_multileg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts, book = _files(tmp_path, KOTAK_FULL, SPREAD)
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    line = _line_of(book, "mode: native")
    assert f"{book}:{line}:11: error: account 'desk' (kotak_neo) has no native multileg orders" in out
    assert "hint: write mode: auto" in out
    # The same playbook on ODIN (native multileg) passes that check.
    accounts, book = _files(tmp_path, ODIN_NO_FEED.replace('"}', '", feed: "ws://127.0.0.1:1/"}'), SPREAD)
    code, out = _validate(accounts, book, capsys)
    assert "multileg" not in out and code == 0, out


def test_native_spread_with_more_legs_than_the_broker_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    condor = (ROOT / "playbooks" / "iron_condor.yaml").read_text().replace("mode: auto", "mode: native")
    condor = condor.replace("account: paper\n", "")  # _files names the account
    odin = ODIN_NO_FEED.replace('"}', '", feed: "ws://127.0.0.1:1/"}')
    accounts, book = _files(tmp_path, odin, condor)
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    line = _line_of(book, "mode: native")
    assert f"{book}:{line}:" in out
    assert "(odin)'s native multileg orders take at most 3 legs, not 4" in out
    assert "hint: write mode: auto" in out
    # As shipped (mode: auto) the condor is legged on ODIN: valid.
    accounts, book = _files(tmp_path, odin, condor.replace("mode: native", "mode: auto"))
    code, out = _validate(accounts, book, capsys)
    assert "multileg" not in out and code == 0, out


def test_ltp_prices_need_market_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    accounts, book = _files(tmp_path, ODIN_NO_FEED, SPREAD)  # ODIN quotes only through its feed host
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    line = _line_of(book, 'price: {ltp: "+8%"}')
    expected = "error: account 'desk' (odin) cannot price from the LTP: endpoints.feed is not set"
    assert f"{book}:{line}:16: {expected}" in out
    assert out.count("cannot price from the LTP") == 2  # both legs
    assert "hint: set endpoints.feed in the account" in out


def test_order_type_and_product_the_broker_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = dataclasses.replace(
        descriptions.KOTAK_NEO,
        order_types=frozenset({OrderType.MARKET, OrderType.SL, OrderType.SL_M}),
        products=frozenset(descriptions.KOTAK_NEO.products) - {descriptions.Product.NRML},
    )
    monkeypatch.setitem(descriptions.DESCRIPTIONS, "kotak_neo", narrow)
    accounts, book = _files(tmp_path, KOTAK_FULL, SPREAD.replace("mode: native", "mode: auto"))
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    assert out.count("(kotak_neo) does not take LIMIT orders") == 2
    assert out.count("(kotak_neo) does not take product NRML") == 2
    assert "hint: use one of: CNC, MIS" in out


def test_every_missing_credential_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "    broker: kotak_neo\n    credentials:\n      consumer_key: {env: K_KEY}\n"
    accounts, book = _files(tmp_path, body, SPREAD.replace("mode: native", "mode: auto"))
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    assert (
        f"{accounts}:5:5: error: account 'desk' (kotak_neo) lacks required credential(s): "
        "mobile_number, ucc, totp_secret, mpin" in out
    )
    assert "{env: DESK_MOBILE_NUMBER}" in out
    # Configured but not set here: a warning naming the variable (validate never reads secret values).
    assert "warning: credential consumer_key: environment variable K_KEY is not set" in out


def test_credentials_present_and_set_are_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "totp"
    secret.write_text("JBSWY3DPEHPK3PXP")
    for name in ("K_KEY", "K_MOBILE", "K_UCC", "K_MPIN"):
        monkeypatch.setenv(name, "x")
    body = KOTAK_FULL.replace("/run/secrets/k_totp", str(secret))
    accounts, book = _files(tmp_path, body, SPREAD.replace("mode: native", "mode: auto"))
    code, out = _validate(accounts, book, capsys)
    assert code == 0 and "warning" not in out, out


def test_alphapoint_takes_either_credential_set() -> None:
    ap = descriptions.ALPHAPOINT
    assert ap.missing_credentials({"username": {}, "password": {}}) == ()
    assert [f.name for f in ap.missing_credentials({"api_key": {}})] == ["api_secret", "user_id"]
    # Kotak's identifiers may sit in options instead of credentials.
    kotak = descriptions.KOTAK_NEO
    creds = {"consumer_key": {}, "mpin": {}, "totp": {}}
    assert kotak.missing_credentials(creds, {"ucc": "X", "mobile_number": "1"}) == ()


def test_inline_sizes_disagreeing_with_the_local_master(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "master.csv").write_text(
        "exchange,symbol,expiry,strike,option_type,lot_size,tick_size,freeze_quantity\n"
        "NFO,BANKNIFTY,2026-12-29,52000,CE,30,0.05,900\n"  # lot 30, the playbook says 35
    )
    body = KOTAK_FULL + "    instruments: master.csv\n"
    accounts, book = _files(tmp_path, body, FIXED_SPREAD.replace("mode: native", "mode: auto"))
    code, out = _validate(accounts, book, capsys)
    assert code == 1
    line = _line_of(book, "{exchange: NFO, symbol: BANKNIFTY, expiry: 2026-12-29, strike: 52000")
    assert (
        f"{book}:{line}:102: error: lot_size 35 disagrees with the broker's master (30) "
        "for NFO BANKNIFTY 2026-12-29 52000 CE" in out
    )
    assert "hint: the master wins: write lot_size: 30, or remove it" in out
    # The 52500 CE is not listed: a warning here (validate may see an older file), an error in `runner check`.
    assert "warning: NFO BANKNIFTY 2026-12-29 52500 CE is not in the broker's instrument master" in out
