import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from runner import ids

IST = ZoneInfo("Asia/Kolkata")


def test_run_id_is_deterministic_and_zone_independent() -> None:
    t_ist = dt.datetime(2026, 11, 23, 9, 20, tzinfo=IST)
    t_utc = t_ist.astimezone(dt.UTC)
    assert ids.run_id("straddle", t_ist) == ids.run_id("straddle", t_utc)
    assert ids.run_id("straddle", t_ist).startswith("20261123-035000-")
    assert ids.run_id("straddle", t_ist) != ids.run_id("other", t_ist)
    assert ids.run_id("straddle", t_ist) != ids.run_id("straddle", t_ist + dt.timedelta(days=1))


def test_run_id_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        ids.run_id("x", dt.datetime(2026, 11, 23, 9, 20))


def test_client_order_ids_are_short_unique_and_stable() -> None:
    seen = {
        ids.client_order_id("run", f"s{i}", leg, attempt)
        for i in range(50)
        for leg in range(4)
        for attempt in range(3)
    }
    assert len(seen) == 600
    cid = ids.client_order_id("run", "entry")
    assert cid == ids.client_order_id("run", "entry") and len(cid) == 18 and cid.isalnum()


def test_numeric_id_is_positive_int64() -> None:
    n = ids.numeric_id(ids.client_order_id("r", "s"))
    assert 0 < n < 2**63 and n == ids.numeric_id(ids.client_order_id("r", "s"))


def test_fire_id_depends_on_version() -> None:
    t = dt.datetime(2026, 11, 23, 9, 20, tzinfo=IST)
    assert ids.fire_id("p", "v1", t) != ids.fire_id("p", "v2", t)


def test_leg_ids_derive_from_the_group_and_split_back() -> None:
    group = ids.client_order_id("run", "spread")
    legs = [ids.leg_client_id(group, n) for n in (1, 2, 3, 4)]
    assert len(set(legs)) == 4
    assert [ids.split_leg_client_id(c) for c in legs] == [(group, n) for n in (1, 2, 3, 4)]
    assert ids.split_leg_client_id(group) is None  # a plain id is not a leg
    assert ids.split_leg_client_id("rnXL1") is None
