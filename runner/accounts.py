"""Accounts live outside playbooks: broker kind, endpoints, rate limits and credential *references*.

Lookup order for the accounts file: ``--accounts FILE``, then ``$RUNNER_ACCOUNTS``, then
``./accounts.yaml``, then ``~/.config/runner/accounts.yaml``. The ``paper`` account is built in, so every
shipped example runs with no file at all. Secrets are read from the environment or a secret file at the
moment an adapter asks for them and are wrapped in :class:`Secret`, whose repr never shows the value;
resolving registers the value with :mod:`runner.scrub`, so it is masked wherever text leaves the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.scrub import register

ENV_VAR = "RUNNER_ACCOUNTS"
DEFAULT_PATHS = (Path("accounts.yaml"), Path("~/.config/runner/accounts.yaml"))


class Secret:
    """A credential value that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class SecretRef(BaseModel):
    """Where a credential comes from: ``{env: NAME}`` or ``{file: /run/secrets/x}``. Never the value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a credential names exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> Secret:
        """The value, registered for scrubbing (:mod:`runner.scrub`) before anyone can print it."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise LookupError(f"credential environment variable {self.env} is not set")
        else:
            assert self.file is not None
            path = Path(self.file).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise LookupError(f"credential file {path} cannot be read: {exc.strerror}") from None
        register(value)
        return Secret(value)


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Indian retail algo threshold is 10 orders/s per exchange segment: stay below by default.
    orders_per_second: float = Field(default=8.0, gt=0, le=1000)
    burst: int = Field(default=1, ge=1)
    per_segment: bool = True
    # Market-data reads (quotes) take a bucket of their own; None: the broker's default
    # (runner.brokers.ratelimit.read_limiter).
    reads_per_second: float | None = Field(default=None, gt=0, le=1000)
    reads_burst: int | None = Field(default=None, ge=1)


class Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    broker: str
    description: str | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    credentials: dict[str, SecretRef] = Field(default_factory=dict)
    instruments: str | None = None  # path to an instrument master file (relative to the accounts file)
    timeout_seconds: float = Field(default=10.0, gt=0)
    relogin_at: str | None = None  # local HH:MM for brokers whose sessions expire daily
    timezone: str = "Asia/Kolkata"
    # `runner run` / `apply` refuse outside the playbook's calendar sessions (--ignore-calendar overrides)
    enforce_calendar: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    def secret(self, key: str) -> Secret:
        try:
            ref = self.credentials[key]
        except KeyError:
            raise LookupError(f"account {self.name!r} has no credential {key!r}") from None
        return ref.resolve()


PAPER = Account(
    name="paper",
    broker="paper",
    description="built-in paper broker (no network)",
    enforce_calendar=False,  # paper trades at any hour
)


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    accounts: dict[str, dict[str, Any]] = Field(default_factory=dict)


def find_config_file(
    explicit: str | os.PathLike[str] | None, env_var: str, defaults: tuple[Path, ...]
) -> Path | None:
    """The lookup every configuration file shares: ``--flag FILE``, then ``$ENV_VAR``, then the first of
    ``defaults`` that exists (``./x.yaml``, ``~/.config/runner/x.yaml``); None when there is none."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(env_var):
        return Path(env)
    for candidate in defaults:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def find_accounts_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    return find_config_file(explicit, ENV_VAR, DEFAULT_PATHS)


def load_accounts(path: Path | None) -> dict[str, Account]:
    """All accounts known to this process, ``paper`` included (a file may override it)."""
    accounts = {"paper": PAPER}
    if path is None:
        return accounts
    from runner.playbook.yamlload import load_yaml, read_text

    doc = load_yaml(read_text(path), filename=str(path)).value
    parsed = AccountsFile.model_validate(doc)
    for name, body in parsed.accounts.items():
        body = dict(body)
        if body.get("instruments"):
            body["instruments"] = str((path.parent / body["instruments"]).resolve())
        accounts[name] = Account.model_validate({"name": name, **body})
    return accounts


def get_account(name: str, accounts_file: str | os.PathLike[str] | None = None) -> Account:
    accounts = load_accounts(find_accounts_file(accounts_file))
    try:
        return accounts[name]
    except KeyError:
        known = ", ".join(sorted(accounts))
        raise LookupError(f"unknown account {name!r} (known: {known})") from None
