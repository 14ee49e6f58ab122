"""The token rule of ``runner serve --http``: off the loopback only with a token; with one, every request
carries it (Bearer, ``?token=`` answered with a cookie, or that cookie)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers.web import clean_env, get, serve_cmd, serving, write_playbooks

from runner.web.auth import COOKIE, HttpConfigError, check_bind, is_loopback, load_token, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), ("localhost:9", ("localhost", 9))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", ":80", "h:99999", "h:x"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(HttpConfigError, match="HOST:PORT"):
        parse_address(text)


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("ops-box")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(HttpConfigError, match="not a loopback address"):
        check_bind("0.0.0.0", None)


def test_token_sources(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert load_token(str(f), {"RUNNER_HTTP_TOKEN": "from-env"}) == "from-file"
    assert load_token(None, {"RUNNER_HTTP_TOKEN": " from-env "}) == "from-env"
    assert load_token(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(HttpConfigError, match="empty"):
        load_token(str(tmp_path / "empty"))


def test_non_loopback_without_token_is_refused_exit_2(tmp_path: Path) -> None:
    write_playbooks(tmp_path / "pb")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    done = subprocess.run(
        serve_cmd(tmp_path / "pb", db, "--http", "0.0.0.0:0"),
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and "RUNNER_HTTP_TOKEN" in done.stderr
    assert not (tmp_path / "j.db").exists()  # refused before anything started


def test_token_required_on_every_request(tmp_path: Path) -> None:
    with serving(tmp_path, {"RUNNER_HTTP_TOKEN": "tok-123"}) as s:
        for path in ("", "api/status", "metrics", "run/x"):
            status, body, headers = get(s.url + path)
            assert status == 401, path
            assert "tok-123" not in body and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(s.url, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(s.url + "?token=wrong")[0] == 401
        assert get(s.url + "api/status", {"Authorization": "Bearer tok-123"})[0] == 200
        assert get(s.url + "metrics", {"Authorization": "Bearer tok-123"})[0] == 200
        status, _, headers = get(s.url + "?token=tok-123")
        assert status == 200 and f"{COOKIE}=tok-123" in headers["Set-Cookie"]
        assert "HttpOnly" in headers["Set-Cookie"]
        assert get(s.url + "api/status", {"Cookie": f"{COOKIE}=tok-123"})[0] == 200
        assert get(s.url + "api/status", {"Cookie": f"{COOKIE}=nope"})[0] == 401
        s.proc.terminate()
        out, err = s.proc.communicate(timeout=30)
        assert "tok-123" not in out + err + s.first_line  # never logged


def test_loopback_without_token_is_open(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        assert get(s.url + "api/status")[0] == 200
        assert get(s.url + "run/no-such-run")[0] == 404
