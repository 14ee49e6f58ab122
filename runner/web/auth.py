"""Who may read the status page: anyone on loopback, else only a holder of the configured token.

The token comes from ``--http-token-file`` or ``$RUNNER_HTTP_TOKEN``; once configured it is required on
every request, loopback included: ``Authorization: Bearer``, or for a browser ``?token=`` (answered with
a cookie so links and refreshes keep working). Compared in constant time; never logged (the server runs
without an access log, which would print the query string)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

ENV_VAR = "RUNNER_HTTP_TOKEN"
COOKIE = "runner_token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpConfigError(ValueError):
    """--http / token settings that cannot be served (usage error, exit 2)."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0: any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise HttpConfigError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere: treated as reachable from the network


def load_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The configured token (file first, then the environment), or None."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise HttpConfigError(f"--http-token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise HttpConfigError(f"--http-token-file {token_file} is empty")
        return token
    return env.get(ENV_VAR, "").strip() or None


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the page beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise HttpConfigError(
            f"--http {host}: not a loopback address, and no token is configured; the status page shows "
            f"accounts, orders and positions, so anyone on the network could read them. Bind 127.0.0.1, or "
            f"set ${ENV_VAR} / --http-token-file (then every request must carry it)"
        )


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def token_middleware(token: str | None) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        query = request.query.get("token")
        if _matches(bearer, token) or _matches(request.cookies.get(COOKIE), token):
            return await handler(request)
        if _matches(query, token):
            response = await handler(request)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response
        return web.Response(
            status=401,
            text="401: a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN in a browser)\n",
            headers={"WWW-Authenticate": 'Bearer realm="runner"'},
        )

    return check
