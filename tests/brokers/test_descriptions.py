"""The static broker descriptions state each adapter's facts once: the adapters' runtime capabilities are
the description's, and every endpoint, option and credential key an adapter reads is described."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.brokers.base import Capability
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
VENUES = ("kotak_neo", "blitz", "alphapoint", "odin")
# Read but deliberately undocumented: the Blitz path-override table (every Paths field) is one entry.
BLITZ_PATHS = {"login", "place", "modify", "cancel", "orders", "open_orders", "order", "positions", "trades"}


def test_every_registered_broker_is_described() -> None:
    assert set(DESCRIPTIONS) == set(REGISTRY)


@pytest.mark.parametrize("kind", VENUES)
def test_runtime_capabilities_come_from_the_description(kind: str) -> None:
    module, _, _factory = REGISTRY[kind].partition(":")
    import importlib

    mod = importlib.import_module(module)
    classes = [c for c in vars(mod).values() if isinstance(c, type) and getattr(c, "name", None) == kind]
    assert classes and all(c.capabilities is DESCRIPTIONS[kind].capabilities for c in classes)


def test_paper_declares_the_description_plus_idempotent_ids() -> None:
    from runner.brokers.paper.broker import BASE_CAPABILITIES

    assert DESCRIPTIONS["paper"].capabilities == BASE_CAPABILITIES
    assert Capability.MARKET_DATA in BASE_CAPABILITIES


@pytest.mark.parametrize("kind", VENUES)
def test_every_key_the_adapter_reads_is_described(kind: str) -> None:
    source = (ROOT / "runner" / "brokers" / kind / "client.py").read_text()
    desc = DESCRIPTIONS[kind]
    endpoints = set(re.findall(r'(?:endpoints|\bep)\.get\("(\w+)"', source)) - BLITZ_PATHS
    options = set(re.findall(r'(?:options|\bopts)\.get\("(\w+)"', source))
    options |= set(re.findall(r'opts\["(\w+)"\]', source))
    creds = set(re.findall(r'secret\("(\w+)"\)', source)) | set(re.findall(r'_credential\("(\w+)"', source))
    described_endpoints = {k for f in desc.endpoints for k in f.keys}
    described_options = {k for f in desc.options for k in f.keys}
    described_creds = {k for fields in desc.credential_sets for f in fields for k in f.keys}
    described_creds |= {k for f in desc.optional_credentials for k in f.keys}
    assert endpoints <= described_endpoints, endpoints - described_endpoints
    assert options <= described_options, options - described_options
    assert creds <= described_creds | {"totp"}, creds - described_creds
