import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from runner import ids

IST = ZoneInfo("Asia/Kolkata")
# computed by the code before the run id scheme changed (ids already in journals and brokers' books)
GOLDEN_RUN = "20261123-035000-s3c6l73g"
GOLDEN_CID = "rnwebah4orrcv5wkij"
GOLDEN_CID_LEG = "rnxdeppf4rda77pbgu"


def test_run_id_is_deterministic_and_zone_independent() -> None:
    t_ist = dt.datetime(2026, 11, 23, 9, 20, tzinfo=IST)
    t_utc = t_ist.astimezone(dt.UTC)
    assert ids.run_id("straddle", t_ist) == ids.run_id("straddle", t_utc)
    assert ids.legacy_run_id("straddle", t_ist) == GOLDEN_RUN
    assert ids.run_id("straddle", t_ist).startswith("20261123-035000+0000-")
    assert ids.run_id("straddle", t_ist) != ids.run_id("other", t_ist)
    assert ids.run_id("straddle", t_ist) != ids.run_id("straddle", t_ist + dt.timedelta(days=1))


def test_run_id_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        ids.run_id("x", dt.datetime(2026, 11, 23, 9, 20))


def test_client_order_ids_are_short_unique_and_stable() -> None:
    seen = {ids.client_order_id("run", f"s{i}", leg, attempt) for i in range(50) for leg in range(4)
            for attempt in range(3)}
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


def test_run_id_carries_the_local_date_of_the_playbooks_zone() -> None:
    # A rehearsal of 1 December (slot: local midnight) was labelled 30 November (UTC) by the first scheme.
    midnight = dt.datetime(2026, 12, 1, tzinfo=IST)
    assert ids.legacy_run_id("pb.rehearse", midnight).startswith("20261130-183000-")
    new = ids.run_id("pb.rehearse", midnight, IST)
    assert new.startswith("20261201-000000+0530-")
    assert ids.is_legacy_run_id(ids.legacy_run_id("pb", midnight)) and not ids.is_legacy_run_id(new)
    # the scheme is told apart by its form: the two can never collide
    assert new != ids.legacy_run_id("pb.rehearse", midnight)


def test_run_id_in_keeps_a_journaled_legacy_id_and_its_client_ids() -> None:
    slot = dt.datetime(2026, 12, 1, 9, 15, tzinfo=IST)
    old = ids.legacy_run_id("eod", slot)
    journal = {old}
    kept = ids.run_id_in(journal.__contains__, "eod", slot, IST)
    assert kept == old  # resume / restart mid-day: never re-derived
    assert ids.client_order_id(kept, "entry") == ids.client_order_id(old, "entry")
    fresh = ids.run_id_in(set().__contains__, "eod", slot, IST)
    assert fresh == ids.run_id("eod", slot, IST) and fresh.startswith("20261201-091500+0530-")


def test_client_order_ids_of_existing_runs_do_not_change() -> None:
    # Golden values computed by the code before the run id scheme changed: an id in a journal keeps
    # mapping to the same client ids (the broker's book is matched by them).
    assert ids.client_order_id("20261123-035000-sxhwrf6w", "entry") == GOLDEN_CID
    assert ids.client_order_id("20261123-035000-sxhwrf6w", "entry", 1, 2) == GOLDEN_CID_LEG
