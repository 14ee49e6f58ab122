"""What each broker kind is, without logging in: capabilities, credentials, endpoints and options.

One registry (:data:`DESCRIPTIONS`) read by the adapters (their runtime ``capabilities``), by
``runner validate --accounts`` (capability and credential checks) and by ``runner check``. Plain
dataclasses and no adapter imports, so validation stays fast. A fact stated here is the adapter's: when
an adapter learns a new credential, endpoint or option, it is added here too (the adapters read their
``capabilities`` from this module, and tests/brokers/test_descriptions.py checks that every endpoint,
option and credential key a client reads is described here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runner.brokers.base import Capability
from runner.model import OrderType, Product


@dataclass(frozen=True, slots=True)
class Field:
    """One credential, endpoint or option: its key (aliases the adapter also accepts) and meaning."""

    name: str
    meaning: str
    aliases: tuple[str, ...] = ()
    default: str | None = None
    # Identifiers that are not secret (Kotak's ucc, mobile number) may sit in ``options`` instead.
    in_options: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    kind: str
    title: str
    capabilities: frozenset[Capability]
    # Alternative credential sets (AlphaPoint: API key or username/password); each is complete alone.
    credential_sets: tuple[tuple[Field, ...], ...] = ((),)
    optional_credentials: tuple[Field, ...] = ()
    endpoints: tuple[Field, ...] = ()
    required_endpoints: tuple[str, ...] = ()  # one of these endpoint keys must be set
    options: tuple[Field, ...] = ()
    order_types: frozenset[OrderType] = frozenset(OrderType)
    products: frozenset[Product] = frozenset(Product)
    # Market data served only when this endpoint is configured (ODIN's feed host), else always.
    market_data_endpoint: tuple[str, ...] = ()
    default_reads_per_second: float | None = None
    notes: str = ""
    instruments_required: bool = True
    # Broker error codes meaning "not from the registered static IP" (runner check says it in those words).
    ip_refusal_codes: frozenset[str] = frozenset()
    # Most legs one native multileg order takes (ODIN: 2L/3L only); None: as many as a spread has.
    multileg_max_legs: int | None = None

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def market_data(self, endpoints: Mapping[str, object]) -> bool:
        """Whether an account with these endpoints can read prices (LTP, quotes)."""
        if Capability.MARKET_DATA not in self.capabilities:
            return False
        return not self.market_data_endpoint or any(k in endpoints for k in self.market_data_endpoint)

    def accepts(self, order_type: OrderType) -> bool:
        if order_type not in self.order_types:
            return False
        if order_type is OrderType.MARKET:
            return Capability.MARKET_ORDERS in self.capabilities
        if order_type in (OrderType.SL, OrderType.SL_M):
            return Capability.STOP_ORDERS in self.capabilities
        return True

    def missing_credentials(
        self, credentials: Mapping[str, object], options: Mapping[str, object] = {}
    ) -> tuple[Field, ...]:
        """The required credentials not configured, from the set the account comes closest to."""
        def present(f: Field) -> bool:
            in_options = f.in_options and any(k in options for k in f.keys)
            return in_options or any(k in credentials for k in f.keys)

        best: tuple[Field, ...] | None = None
        for fields in self.credential_sets:
            missing = tuple(f for f in fields if not present(f))
            if best is None or len(missing) < len(best):
                best = missing
        return best or ()


_ORDERING = frozenset({Capability.MODIFY, Capability.MARKET_ORDERS, Capability.STOP_ORDERS,
                       Capability.MARKET_DATA})
_TRANSPORT = Field("http_transport", "httpx transport: aiohttp (default) or httpx", default="aiohttp")

PAPER = BrokerDescription(
    kind="paper",
    title="built-in paper broker (no network)",
    capabilities=_ORDERING | {Capability.NATIVE_MULTILEG, Capability.LOOKUP_BY_CLIENT_ID},
    options=(
        Field("reference_prices", "reference price path: true (random walk) or false", default="true"),
        Field("prices", "starting prices by instrument key"),
        Field("seed", "random-walk seed", default="paper"),
        Field("db_url", "where the paper book is kept (default: the journal's database)"),
    ),
    instruments_required=False,
)

KOTAK_NEO = BrokerDescription(
    kind="kotak_neo",
    title="Kotak Neo Trade API",
    capabilities=_ORDERING | {Capability.BRACKET_COVER},
    credential_sets=((
        Field("consumer_key", "API access token from the Neo app (Authorization header)", ("access_token",)),
        Field("mobile_number", "registered mobile number, +91...", in_options=True),
        Field("ucc", "unique client code", in_options=True),
        Field("totp_secret", "base32 TOTP secret registered for the API (or `totp`: a one-use code)",
              ("totp",)),
        Field("mpin", "6-digit MPIN (second login step)"),
    ),),
    endpoints=(
        Field("login", "login host (tradeApiLogin/tradeApiValidate)", default="https://mis.kotaksecurities.com"),
        Field("trade", "trading host; default: the session's baseUrl from the login reply"),
        Field("positions_path", "positions path override"),
    ),
    options=(
        Field("quote_type", "quotes endpoint filter", default="all"),
        Field("amo", "send as after-market orders", default="false"),
        Field("unknown_status", "an order status Kotak adds later reads as: open or fail", default="open"),
        Field("verify_place", "read each new order back (Kotak accepts, then rejects)", default="true"),
        _TRANSPORT,
    ),
    default_reads_per_second=15.0,
    notes="sessions and orders only from the registered static IP; sessions end daily (relogin_at)",
    # 100008 "IP not whitelisted", 1037 "session IP mismatch" (kotak_neo/wire.py, brokers/kotak_neo.md)
    ip_refusal_codes=frozenset({"100008", "1037"}),
)

BLITZ = BrokerDescription(
    kind="blitz",
    title="QuantXpress Blitz",
    capabilities=_ORDERING,
    credential_sets=((
        Field("app_key", "application key", ("appKey",)),
        Field("user_id", "login user id (also the clientId unless options.client_id)", ("userId",),
              in_options=True),
    ),),
    endpoints=(
        Field("base", "host for all three APIs", default="http://uat.bull8.ai:7443"),
        Field("auth", "auth API base", default="{base}/api_gateway/v1"),
        Field("api", "interactive (trading) API base", default="{base}/api_interactive/api/v1"),
        Field("md_api", "market-data API base; default: on the trading host"),
        Field("quote", "quote path under md_api"),
    ),
    options=(
        Field("dialect", "request paths: sdk or seed", default="sdk"),
        Field("client_id", "trading client code sent as clientId"),
        Field("quote_batch", "instruments per quote request"),
        _TRANSPORT,
    ),
    default_reads_per_second=10.0,
)

ALPHAPOINT = BrokerDescription(
    kind="alphapoint",
    title="AlphaPoint APEX (WebSocket)",
    capabilities=_ORDERING | {Capability.LOOKUP_BY_CLIENT_ID, Capability.STREAMING},
    credential_sets=(
        (Field("api_key", "API key"), Field("api_secret", "API secret (signs the nonce)"),
         Field("user_id", "numeric APEX user id")),
        (Field("username", "APEX user name"), Field("password", "APEX password")),
    ),
    endpoints=(Field("ws", "WebSocket gateway, wss://<venue>/WSGateway/", ("websocket", "base_url")),),
    required_endpoints=("ws", "websocket", "base_url"),
    options=(
        Field("oms_id", "OMS id (with account_id; else read after login)"),
        Field("account_id", "trading account id (with oms_id)"),
        Field("quote_concurrency", "GetLevel1 requests at a time", default="8"),
        Field("peg_price_type", "PegPriceType for trailing orders", default="1"),
        Field("product", "product recorded for orders (APEX has none)", default="MIS"),
    ),
    default_reads_per_second=10.0,
)

ODIN = BrokerDescription(
    kind="odin",
    title="ODIN Cloud REST Pro (63 moons)",
    capabilities=_ORDERING | {Capability.NATIVE_MULTILEG},
    multileg_max_legs=3,
    credential_sets=((
        Field("x_api_key", "gateway key (x-api-key header)"),
        Field("user_id", "login user id"),
        Field("password", "login password"),
        Field("api_key", "API key of the login body"),
    ),),
    optional_credentials=(
        Field("totp_secret", "base32 TOTP secret: second factor as TOTP"),
        Field("second_auth", "static second factor (with options.second_auth_type)"),
    ),
    endpoints=(
        Field("base_url", "REST host", ("rest",)),
        Field("feed", "market-feed WebSocket, wss://host:port (quotes need it)", ("market_feed",)),
    ),
    required_endpoints=("base_url", "rest"),
    options=(
        Field("strike_in_paise", "strikes on the wire in paise", default="true"),
        Field("client_id", "dealer's client code"),
        Field("positions_type", "NET or DAY positions", default="NET"),
        Field("confirm_place", "read each new order back", default="true"),
        Field("page_size", "order-book page size", default="200"),
        Field("feed_first_tick_seconds", "wait for a first tick after subscribing", default="2.0"),
        Field("login_type", "login body's login_type", default="PASSWORD"),
        Field("second_auth_type", "type of a static second_auth"),
        _TRANSPORT,
    ),
    market_data_endpoint=("feed", "market_feed"),
)

DESCRIPTIONS: dict[str, BrokerDescription] = {
    d.kind: d for d in (PAPER, KOTAK_NEO, BLITZ, ALPHAPOINT, ODIN)
}


def describe(kind: str) -> BrokerDescription | None:
    return DESCRIPTIONS.get(kind)


@dataclass(frozen=True, slots=True)
class MissingCredential:
    """A required credential an account does not name, or names by a reference not set here."""

    account: str
    key: str
    meaning: str
    unset: str | None = None  # the env var not set / file absent, when the reference exists
    ref: str | None = None  # that env var's name or file's path


def credential_problems(
    account: str, kind: str, credentials: Mapping[str, Mapping[str, str]], options: Mapping[str, object]
) -> tuple[list[MissingCredential], list[MissingCredential]]:
    """(not configured, configured but not present in this environment). Presence only: a secret file
    is checked to exist and an env var to be set; no value is read (validate never resolves secrets)."""
    import os
    from pathlib import Path

    desc = DESCRIPTIONS.get(kind)
    if desc is None:
        return [], []
    missing = [
        MissingCredential(account, f.name, f.meaning) for f in desc.missing_credentials(credentials, options)
    ]
    unset: list[MissingCredential] = []
    for key, ref in credentials.items():
        if not isinstance(ref, Mapping):
            continue
        if (env := ref.get("env")) and env not in os.environ:
            unset.append(MissingCredential(account, key, "", f"environment variable {env} is not set", env))
        elif (path := ref.get("file")) and not Path(str(path)).expanduser().is_file():
            unset.append(MissingCredential(account, key, "", f"secret file {path} does not exist", path))
    return missing, unset


__all__ = [
    "DESCRIPTIONS",
    "BrokerDescription",
    "Field",
    "MissingCredential",
    "credential_problems",
    "describe",
]
