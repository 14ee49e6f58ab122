"""Shared fixtures. PostgreSQL: one throwaway cluster per session (``pg_url``), a fresh database per test
(``pg_db_url``). Missing server binaries or psycopg skip those tests, unless ``RUNNER_REQUIRE_PG=1`` (CI),
where they fail. Everything heavy is imported lazily: this file is loaded for every test run."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from helpers.pg_server import PG_SERVER_OPTIONS

REQUIRE_PG_ENV = "RUNNER_REQUIRE_PG"
PG_USER = "runner"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_PG_ENV) == "1":
        pytest.fail(f"PostgreSQL required ({REQUIRE_PG_ENV}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _server_user() -> tuple[int, int] | None:
    """initdb and postgres refuse to run as root: drop to an unprivileged user (``nobody``)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        _unavailable("running as root and there is no 'nobody' user to run the server as")
    return pw.pw_uid, pw.pw_gid


class _ConnectionTracker:
    """Every psycopg connection any SQLAlchemy pool opens, held until its database goes and closed then.
    Engines built inside tests are never disposed, and a pool dropped with connections in it (after
    ``Engine.dispose()`` a checked-out connection returns to the old pool) lets psycopg warn
    (ResourceWarning, an error under ``-W error``) whenever the collector gets to it: held here, it
    cannot be collected open."""

    def __init__(self) -> None:
        self.conns: list[Any] = []

    def __call__(self, dbapi_conn: Any, _record: Any) -> None:
        if type(dbapi_conn).__module__.startswith("psycopg"):
            self.conns.append(dbapi_conn)

    def close(self, database: str | None = None) -> None:
        """Close the connections to ``database`` (all if None)."""
        keep = []
        for conn in self.conns:
            if database is None or conn.closed or conn.info.dbname == database:
                conn.close()
            else:
                keep.append(conn)
        self.conns = keep


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # data dir, log and unix socket live here
    user: tuple[int, int] | None
    admin: Any = None  # psycopg connection to "postgres", autocommit
    tracker: _ConnectionTracker = field(default_factory=_ConnectionTracker)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@/{database}?host={self.root}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        uid_gid: dict[str, Any] = {}
        if self.user is not None:
            uid_gid = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
            **uid_gid,
        )

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.root, *self.user)
        init = self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "--no-sync",
            "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        if init.returncode != 0:
            _unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        started = self._run(
            "pg_ctl", "start", "-D", str(self.data), "-w", "-t", "30", "-s", "-l", str(self.log),
            "-o", f"-k {self.root} {PG_SERVER_OPTIONS}",
        )  # fmt: skip
        if started.returncode != 0:
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            _unavailable(f"pg_ctl start failed: {started.stderr.strip()} {tail}")
        import psycopg

        self.admin = psycopg.connect(host=str(self.root), user=PG_USER, dbname="postgres", autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}{next(self._names)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-s")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server for this session: initdb in a temp dir, unix socket only, removed at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[pg]')")
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable("initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")
    import sqlalchemy as sa

    # In /tmp itself: pytest's tmp dirs are private to root, the server user could not reach them.
    root = Path(tempfile.mkdtemp(prefix="runner-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = PgCluster(bindir, root, _server_user())
    tracker = cluster.tracker
    sa.event.listen(sa.pool.Pool, "connect", tracker)
    try:
        cluster.start()
        yield cluster
    finally:
        tracker.close()
        sa.event.remove(sa.pool.Pool, "connect", tracker)
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """SQLAlchemy URL of a database on the session's PostgreSQL server (shared by the whole session)."""
    return pg_cluster.url(pg_cluster.create_database("runner"))


@pytest.fixture
def pg_db_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database for one test; its connections are closed and it is dropped afterwards."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.tracker.close(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_reroute(monkeypatch: pytest.MonkeyPatch, pg_db_url: str) -> Iterator[Any]:
    """Re-run existing SQLite-file tests on this test's PostgreSQL database, unedited:
    ``pg_reroute(module, ...)`` swaps each module's ``make_engine`` (and ``make_env`` from
    helpers.engine), and ``runner.journal.db.shared_engine`` for the test's duration, so that every
    ``sqlite:///file`` URL they open in this process lands on PostgreSQL. After the test it
    checks that tables were created there, so a test cannot quietly pass on SQLite."""
    import helpers.engine

    from runner.journal.db import make_engine

    def pg_engine(url: str | None = None, **kwargs: Any) -> Any:
        if url is not None and not str(url).startswith("sqlite:///"):
            return make_engine(url, **kwargs)  # already PostgreSQL (str(engine.url)), or in-memory SQLite
        return make_engine(pg_db_url, **kwargs)

    original_make_env = helpers.engine.make_env

    def pg_make_env(tmp_path: Path, start: Any = None, **config: Any) -> Any:
        env = original_make_env(tmp_path, start, **config)
        env.db_url = pg_db_url  # tests open "another process's" Journal(env.db_url)
        return env

    monkeypatch.setattr(helpers.engine, "make_engine", pg_engine)
    # Journal(url) and PaperBroker(db_url=...) look runner.journal.db.shared_engine up when called.
    import runner.journal.db

    shared: dict[str, Any] = {}
    original_shared = runner.journal.db.shared_engine

    def pg_shared_engine(url: str | None = None) -> Any:
        if url is None or not str(url).startswith("sqlite:///"):
            return original_shared(url)
        if pg_db_url not in shared:
            shared[pg_db_url] = make_engine(pg_db_url)
        return shared[pg_db_url]

    monkeypatch.setattr(runner.journal.db, "shared_engine", pg_shared_engine)

    def reroute(*modules: Any) -> None:
        for module in modules:
            if hasattr(module, "make_engine"):
                monkeypatch.setattr(module, "make_engine", pg_engine)
            if hasattr(module, "make_env"):
                monkeypatch.setattr(module, "make_env", pg_make_env)

    yield reroute
    import sqlalchemy as sa

    engine = make_engine(pg_db_url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    assert tables, "the rerouted test never touched PostgreSQL"


# Alerts delivered to a loopback apprise ``json://`` target (tests/helpers/alerts_capture.py): ``capture``
# records the posts, ``dispatcher`` is the process's alert dispatcher sending there while a test runs.
@pytest.fixture
def capture() -> Iterator[Any]:
    from helpers.alerts_capture import Capture

    c = Capture()
    yield c
    c.close()


@pytest.fixture
def dispatcher(capture: Any) -> Iterator[Any]:
    from runner.alerts.config import parse_config
    from runner.alerts.delivery import Dispatcher
    from runner.alerts.publish import install

    d = Dispatcher(parse_config({"version": 1, "targets": {"ops": capture.url}})).start()
    previous = install(d)
    yield d
    install(previous)
    d.close()
