from pathlib import Path

import pytest

from runner.accounts import Secret, get_account, load_accounts


def test_paper_is_built_in_without_any_file() -> None:
    assert load_accounts(None)["paper"].broker == "paper"


def test_secrets_come_from_env_and_files_and_never_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mpin").write_text("123456\n")
    (tmp_path / "accounts.yaml").write_text(
        "version: 1\naccounts:\n  kotak-main:\n    broker: kotak_neo\n    credentials:\n"
        "      consumer_key: {env: KOTAK_KEY}\n      mpin: {file: " + str(tmp_path / "mpin") + "}\n"
    )
    monkeypatch.setenv("KOTAK_KEY", "ck-very-secret")
    acct = get_account("kotak-main", tmp_path / "accounts.yaml")
    key = acct.secret("consumer_key")
    assert isinstance(key, Secret) and key.reveal() == "ck-very-secret"
    assert acct.secret("mpin").reveal() == "123456"
    assert "very-secret" not in repr(key) + str(key) + repr(acct)


def test_unknown_account_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="known: paper"):
        get_account("live", None)


def test_missing_env_credential_is_a_lookup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "accounts:\n  x:\n    broker: blitz\n    credentials:\n      pw: {env: NOPE_X}\n"
    )
    monkeypatch.delenv("NOPE_X", raising=False)
    with pytest.raises(LookupError, match="NOPE_X"):
        get_account("x", tmp_path / "a.yaml").secret("pw")
