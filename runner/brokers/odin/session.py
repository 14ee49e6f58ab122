"""ODIN REST session: the HTTP client, the login (bearer token, optional TOTP) and one request with the
envelope unwrapped; a read refused for a dead session is sent once more after one re-login.

Bodies and replies are built and read by :mod:`runner.brokers.odin.wire`; this module does the HTTP I/O
for :class:`runner.brokers.odin.client.OdinBroker`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runner.brokers import expiry
from runner.brokers.odin.wire import BROKER, SESSION_PATH, login_body, totp, unwrap
from runner.errors import AuthExpired, SessionExpired
from runner.scrub import secret
from runner.wirejson import dumps, loads

if TYPE_CHECKING:
    import httpx

    from runner.accounts import Account
    from runner.brokers.primed import PrimedRequest


class OdinSession:
    """One account's REST session. Logs in lazily (``connect``) and once more when a read finds the token
    dead; ``close`` drops the client and the token."""

    def __init__(self, account: Account, base_url: str, *, transport: str | None) -> None:
        self.account = account
        self.base_url = base_url
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self._login_id: object | None = None  # a new object per login: what a primed request was built on

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The HTTP client once connected (its pool is what :mod:`runner.brokers.warm` fills)."""
        return self._client

    @property
    def current(self) -> object | None:
        """The current login (a new object per login), None without a live token: a request primed
        (:mod:`runner.brokers.primed`) under another login carries a stale token."""
        return self._login_id if self._token is not None else None

    def headers(self) -> dict[str, str]:
        """A request's headers under the current login (x-api-key, bearer token)."""
        return self._headers()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "x-api-key": self.account.secret("x_api_key").reveal()}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def connect(self) -> None:
        if self._client is None:
            from runner.brokers.http import make_client

            self._client = make_client(self.base_url, timeout=self.account.timeout_seconds,
                                       transport=self.transport)
        if self._token is None:
            await self._login()

    async def relogin(self) -> None:
        if self._client is None:
            await self.connect()  # a first login is a fresh one
            return
        await self._login()  # the current token counts as stale: a new one is fetched

    async def _login(self) -> None:
        stale = self._token
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return  # another task logged in while we waited
            self._token = None
            acct = self.account
            creds = acct.credentials
            if "totp_secret" in creds:
                # Wall time, not self.clock: the code must match the authenticator's, even in rehearsal.
                second_auth = totp(acct.secret("totp_secret").reveal(), dt.datetime.now(dt.UTC))
                second_type: str | None = "TOTP"
            else:
                second_auth = acct.secret("second_auth").reveal() if "second_auth" in creds else ""
                second_type = acct.options.get("second_auth_type")
            body = login_body(
                user_id=acct.secret("user_id").reveal(),
                password=acct.secret("password").reveal(),
                api_key=acct.secret("api_key").reveal(),
                second_auth=second_auth,
                second_auth_type=second_type,
                login_type=str(acct.options.get("login_type", "PASSWORD")),
            )
            try:
                data = await self._raw("POST", SESSION_PATH, body=body, mutating=False, auth=False)
            except SessionExpired as exc:  # a 401 to a login is a refusal, not an expired session
                raise AuthExpired(f"login refused: {exc.message}", code=exc.code, broker=BROKER) from None
            token = data.get("access_token") if isinstance(data, Mapping) else None
            if not token:
                raise AuthExpired("login reply carried no access_token", broker=BROKER)
            self._token = secret(str(token))  # scrubbed from every log line and journal row
            self._login_id = object()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._token = None
            await client.aclose()

    async def _raw(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
        mutating: bool, auth: bool = True,
    ) -> Any:
        from runner.brokers.http import send

        if self._client is None:
            await self.connect()
        assert self._client is not None
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if body is not None:
            kwargs["content"] = dumps(body).encode()
        if params:
            kwargs["params"] = dict(params)
        response = await send(self._client, method, path, broker=BROKER, mutating=mutating, **kwargs)
        return self.payload(response)

    @staticmethod
    def payload(response: httpx.Response) -> Any:
        """A reply's envelope unwrapped (its data, or the typed error it carries)."""
        try:
            payload = loads(response.content) if response.content else None
        except ValueError:
            payload = None
        return unwrap(response.status_code, payload)

    def write_refused(self, exc: AuthExpired, login: object | None) -> None:
        """A write refused for a dead session (never sent again here: the engine's gateway logs in through
        connect() and retries it, journaled): reported, and the token of ``login`` dropped so that the
        caller's connect() logs in again (not a newer one someone else fetched meanwhile)."""
        expiry.report(exc, self.account.name)
        if login is self._login_id:
            self._token = None

    async def send_primed(self, primed: PrimedRequest) -> Any:
        """A place through its primed request (written now unless written ahead), handled as
        :meth:`call` handles a write. Once written any failure is OutcomeUnknown, never a re-send."""
        login = self._login_id
        try:
            if not primed.written:
                primed.write()
            response = await primed.reply(broker=BROKER, timeout=self.account.timeout_seconds)
            return self.payload(response)
        except AuthExpired as exc:
            self.write_refused(exc, login)
            raise

    async def call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
        mutating: bool,
    ) -> Any:
        """One request. A read refused for a dead session is sent once more after one re-login; a write
        never is (the engine's gateway logs in through connect() and retries it, journaled). Every other
        error surfaces at once: the gateway owns backoff."""
        if self._token is None:
            await self.connect()
        try:
            return await self._raw(method, path, body=body, params=params, mutating=mutating)
        except AuthExpired as exc:
            if mutating:
                self.write_refused(exc, self._login_id)
                raise
            expiry.report(exc, self.account.name)
            await self._login()
        try:
            return await self._raw(method, path, body=body, params=params, mutating=mutating)
        except AuthExpired:
            self._token = None
            raise
