"""Resolved secret values never leave the process: not in logs (structlog or stdlib, tracebacks included),
the journal (calls, events, step and run messages, fire outcomes), nor the CLI's output and error lines.

The secrets come from an accounts file's ``{env: ...}`` / ``{file: ...}`` references, resolved as the
adapters resolve them, or are session tokens an adapter obtained at login."""

from __future__ import annotations

import datetime as dt
import importlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from helpers.engine import make_env, playbook
from helpers.faulty_broker import Faulty

from runner import cli, logs
from runner.accounts import load_accounts
from runner.errors import Rejected

ENV_SECRET = "kotak-consumer-key-9f8e7d6c5b4a"
FILE_SECRET = "mpin-from-a-file-0123456789"
ENV_NAME = "RUNNER_TEST_SCRUB_CONSUMER_KEY"

MARKET = """
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 2}
"""


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test starts with nothing registered (a test registers only by resolving credentials)."""
    scrub = sys.modules.get("runner.scrub")
    if scrub is not None:
        scrub.reset()
    yield
    if (scrub := sys.modules.get("runner.scrub")) is not None:
        scrub.reset()


@pytest.fixture
def resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Both secrets of an accounts file, resolved the way an adapter resolves them."""
    monkeypatch.setenv(ENV_NAME, ENV_SECRET)
    secret_file = tmp_path / "mpin"
    secret_file.write_text(FILE_SECRET + "\n")
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(
        "version: 1\naccounts:\n  desk:\n    broker: kotak_neo\n    credentials:\n"
        f"      consumer_key: {{env: {ENV_NAME}}}\n      mpin: {{file: {secret_file}}}\n"
    )
    account = load_accounts(accounts_file)["desk"]
    assert account.secret("consumer_key").reveal() == ENV_SECRET
    assert account.secret("mpin").reveal() == FILE_SECRET
    return ENV_SECRET, FILE_SECRET


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The process's one logging configuration, into a buffer (JSON lines)."""
    was, saved = structlog.is_configured(), structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(logs, "_configured", logs._configured)
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, force=True)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    if was:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- logs ---------------------------------------------------------------------------------------------


def test_a_traceback_in_a_structlog_event_is_scrubbed(
    resolved: tuple[str, str], log_stream: io.StringIO
) -> None:
    secret, _ = resolved
    try:
        raise ValueError(f"adapter said: bad consumer key {secret}")
    except ValueError:
        logs.get_logger(run="r1").exception("broker_error")
    text = log_stream.getvalue()
    (event,) = _lines(log_stream)
    assert "Traceback" in str(event["exception"]) and "bad consumer key ***" in str(event["exception"])
    assert secret not in text


def test_stdlib_loggers_share_the_one_format_and_are_scrubbed(
    resolved: tuple[str, str], log_stream: io.StringIO
) -> None:
    env_secret, file_secret = resolved
    logging.getLogger("runner.scheduler").error("fire failed: Rejected: key %s refused", env_secret)
    try:
        raise RuntimeError(f"mpin {file_secret} rejected")
    except RuntimeError:
        logging.getLogger("runner.control").exception("halt pass failed")
    logs.get_logger().info("structlog_event", note=f"using {env_secret}")
    text = log_stream.getvalue()
    fire, halt, native = _lines(log_stream)  # all three in the stream, as JSON lines
    assert fire["event"] == "fire failed: Rejected: key *** refused" and fire["level"] == "error"
    assert fire["logger"] == "runner.scheduler" and "timestamp" in fire
    assert halt["logger"] == "runner.control" and "mpin *** rejected" in str(halt["exception"])
    assert native["note"] == "using ***" and native["level"] == "info" and "timestamp" in native
    assert env_secret not in text and file_secret not in text


async def test_an_adapters_session_token_is_scrubbed_once_received(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    from runner.brokers.kotak_neo.client import create
    from runner.brokers.kotak_neo.sim import account_for, start
    from runner.clock import VirtualClock

    clock = VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC))
    async with start(clock=clock) as sim:
        master = Path(__file__).parent / "brokers" / "kotak_neo" / "fixtures" / "instruments.csv"
        account, env = account_for(sim, "desk", instruments=str(master))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        broker = create(account, clock=clock)
        await broker.connect()  # a real two-step login over loopback: the replies carry token and sid
        session = broker._session
        assert session is not None and not session.token.startswith("eyJ")  # no JWT shape to spot
        await broker.close()
    log = logging.getLogger("runner.brokers.kotak_neo")
    log.warning("401 for Auth %s sid %s", session.token, session.sid)
    text = log_stream.getvalue()
    assert "401 for Auth *** sid ***" in text
    assert session.token not in text and session.sid not in text


def test_very_short_values_are_not_scrubbed() -> None:
    scrub = importlib.import_module("runner.scrub")
    scrub.register("1234")  # a 4-digit PIN would otherwise mask every price and quantity 1234
    assert scrub.scrub("qty 1234 at 1234.5") == "qty 1234 at 1234.5"


# --- journal ------------------------------------------------------------------------------------------


async def test_adapter_exception_text_is_scrubbed_from_step_run_call_and_event_rows(
    tmp_path: Path, resolved: tuple[str, str]
) -> None:
    secret, _ = resolved
    env = make_env(tmp_path)
    refusal = Rejected(f"invalid consumer key {secret}", broker="kotak_neo")
    broker = Faulty(env.broker()).fail("place", refusal)
    report = await env.run(playbook(MARKET), broker=broker)
    assert not report.ok
    # a gateway note carrying exception text (runner.engine.gateway.Gateway.note writes exactly this)
    note = f"cancel x: Rejected: {secret}"
    env.journal.record_event(report.run_id, "note", note, env.clock.now(), level="error")
    (call,) = [c for c in env.journal.calls(run_id=report.run_id) if c["error"] == "Rejected"]
    assert call["error_message"] == "[kotak_neo] invalid consumer key ***"
    with env.engine.connect() as conn:
        (step_message,) = conn.execute(sa.text("SELECT message FROM steps")).scalars()
    assert step_message.endswith("rejected ([kotak_neo] invalid consumer key ***)")
    dump = _dump(env.engine)
    assert secret not in dump


def test_fire_outcomes_are_scrubbed(tmp_path: Path, resolved: tuple[str, str]) -> None:
    from runner.journal.db import make_engine
    from runner.journal.fires import Claim, FireState, FireStore, read_daemons

    secret, _ = resolved
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    store = FireStore(engine, "d1")
    now = dt.datetime(2026, 3, 2, 9, 15, tzinfo=dt.UTC)
    claim = Claim("pb", "v1", now, "run1")
    assert store.claim_many([claim], now) == {claim.fire_id}
    store.set_state(claim.fire_id, FireState.FAILED, f"AuthExpired: login refused for {secret}", now)
    row = store.get(claim.fire_id)
    assert row is not None and row.outcome == "AuthExpired: login refused for ***"
    # the daemon's status row (what `runner status` shows): broker errors of its accounts
    store.register_daemon("host", 1, "playbooks", now)
    store.heartbeat(now, status={"broker_errors": {"desk": f"no broker: Rejected: {secret}"}})
    (daemon,) = read_daemons(engine)
    assert daemon["status"] == {"broker_errors": {"desk": "no broker: Rejected: ***"}}
    assert secret not in _dump(engine)


def _dump(engine: sa.Engine) -> str:
    """Every text value of every table, as stored."""
    meta = sa.MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                out.extend(str(v) for v in row if isinstance(v, str))
    return "\n".join(out)


# --- CLI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raise_it",
    [
        lambda s: RuntimeError(f"unexpected: {s}"),
        lambda s: Rejected(f"login refused for key {s}", broker="kotak_neo"),
        lambda s: LookupError(f"no account for {s}"),
    ],
)
def test_cli_error_lines_are_scrubbed(
    resolved: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raise_it: object,
) -> None:
    secret, _ = resolved
    module = importlib.import_module("runner.commands.history")

    def boom(_args: object) -> int:
        raise raise_it(secret)  # type: ignore[operator]

    monkeypatch.setattr(module, "run", boom)
    code = cli.main(["history"])
    err = capsys.readouterr().err
    assert code != 0 and "***" in err and secret not in err


def test_cli_output_and_debug_tracebacks_are_scrubbed(
    resolved: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret, file_secret = resolved
    module = importlib.import_module("runner.commands.history")

    def leaky(_args: object) -> int:
        print(f"session for {secret}")
        raise RuntimeError(f"mpin {file_secret}")

    monkeypatch.setattr(module, "run", leaky)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.main(["history"]) == cli.EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert out == "session for ***\n"
    assert "Traceback" in err and "mpin ***" in err
    assert secret not in out + err and file_secret not in err


def test_configuring_again_replaces_the_handler_and_the_console_format_is_shared(
    log_stream: io.StringIO,
) -> None:
    console = io.StringIO()
    logs.configure(json=False, stream=console, force=True)  # e.g. `runner run` after a library configured
    logging.getLogger("runner.scheduler").warning("stdlib line")
    logs.get_logger().warning("structlog line")
    assert log_stream.getvalue() == ""  # the first handler is gone: no line twice
    stdlib_line, structlog_line = console.getvalue().splitlines()
    assert "[warning  ]" in stdlib_line and "stdlib line" in stdlib_line
    assert "[runner.scheduler]" in stdlib_line
    assert "[warning  ]" in structlog_line and "structlog line" in structlog_line


def test_the_matcher_scrubs_exactly_what_a_plain_alternation_scrubs() -> None:
    """The Aho-Corasick levels against the obvious regex (longest value first), on values that share
    prefixes, extend each other and carry regex metacharacters, in texts made of them and noise."""
    import random
    import re
    from urllib.parse import quote

    scrub = importlib.import_module("runner.scrub")
    rng = random.Random(11)
    alphabet = "ab.*(|\\"
    for _ in range(200):
        values = {_word(rng, alphabet) for _ in range(rng.randint(1, 6))}
        values |= {v + rng.choice(alphabet) * 2 for v in list(values)[:2]}  # values extending others
        scrub.reset()
        forms: set[str] = set()
        for v in values:
            scrub.register(v)
            forms |= {v, json.dumps(v)[1:-1], quote(v, safe="")}
        plain = re.compile("|".join(re.escape(v) for v in sorted(forms, key=len, reverse=True)))
        for _ in range(5):
            parts = [rng.choice([*values, "x", " ", "ab", "(("]) for _ in range(rng.randint(1, 8))]
            text = "".join(parts)
            assert scrub.scrub(text) == plain.sub("***", text), (values, text)


def _word(rng: object, alphabet: str) -> str:
    import random

    assert isinstance(rng, random.Random)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 12)))


def test_old_session_tokens_are_dropped_but_credentials_never(monkeypatch: pytest.MonkeyPatch) -> None:
    scrub = importlib.import_module("runner.scrub")
    monkeypatch.setattr(scrub, "MAX_TOKENS", 4)
    scrub.register("credential-resolved-at-start")
    tokens = [scrub.secret(f"session-token-{i:04d}") for i in range(6)]
    text = " ".join(["credential-resolved-at-start", *tokens])
    assert scrub.scrub(text) == "*** session-token-0000 session-token-0001 *** *** *** ***"


def test_values_sharing_a_prefix_and_a_false_start_before_a_value() -> None:
    """The regex finds prefixes only: a prefix that is not a value must not hide a value starting inside
    it, and of values sharing a prefix (JWTs all start eyJhbGci) the longest at a position goes whole."""
    scrub = importlib.import_module("runner.scrub")
    scrub.register("abcdefgh12345")
    scrub.register("abcdefghZZZZ")
    scrub.register("eyJhbGciOiJIUzI1NiJ9.short")
    scrub.register("eyJhbGciOiJIUzI1NiJ9.short.and.longer")
    assert scrub.scrub("x abcdefghabcdefgh12345 y") == "x abcdefgh*** y"
    assert scrub.scrub("abcdefghZZZZabcdefgh12345") == "******"
    assert scrub.scrub("t=eyJhbGciOiJIUzI1NiJ9.short.and.longer;") == "t=***;"
    assert scrub.scrub("t=eyJhbGciOiJIUzI1NiJ9.shor") == "t=eyJhbGciOiJIUzI1NiJ9.shor"


def test_many_session_tokens_stay_scrubbed() -> None:
    """A daemon logging in many accounts: every token registered stays scrubbed (the regex holds only
    prefixes, so each login recompiles little)."""
    import secrets

    scrub = importlib.import_module("runner.scrub")
    tokens = ["eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(96) for _ in range(300)]
    for t in tokens:
        scrub.secret(t)
    text = " | ".join(tokens[::37])
    assert scrub.scrub(text) == " | ".join(["***"] * len(tokens[::37]))
