"""How a hand-over shares someone's customers out among colleagues (``deal``): evenly, those
at risk spread as evenly, each only to a colleague who may have them."""

from __future__ import annotations

from collections import Counter

from services.common.profiles import CustomerProfile, StaffMember
from services.records.owners import Owned
from services.records.profiles import deal


def owned(cid: str, tier: str | None, store: str | None = "north",
          name: str | None = None) -> Owned:
    return Owned(cid, CustomerProfile(name=name, store_id=store), store, tier)


def staff(staff_id: str, store: str | None) -> StaffMember:
    return StaffMember(staff_id=staff_id, store_id=store)


def test_each_colleague_gets_as_many_and_as_many_at_risk() -> None:
    tiers = ["high"] * 4 + ["medium"] * 5 + ["low"] * 8 + [None] * 3
    items = [owned(f"c-{i:02d}", t) for i, t in enumerate(tiers)]
    takers = [staff("li", "north"), staff("mo", "north"), staff("ada", None)]
    got, kept = deal(items, takers)
    assert kept == []
    assert list(got) == ["li", "mo", "ada"]
    sizes = [len(v) for v in got.values()]
    assert sum(sizes) == 20 and max(sizes) - min(sizes) <= 1, sizes
    for tier in ("high", "medium"):
        counts = [sum(c.tier == tier for c in v) for v in got.values()]
        assert max(counts) - min(counts) <= 1, (tier, counts)
    assert {c.customer_id for v in got.values() for c in v} == {c.customer_id for c in items}


def test_a_customer_goes_only_to_a_colleague_who_may_have_them() -> None:
    items = [owned("n-1", "high"), owned("n-2", "low"), owned("s-1", "high", "south"),
             owned("s-2", "low", "south"), owned("x-1", "low", None)]
    got, kept = deal(items, [staff("li", "north"), staff("ada", None)])
    assert {k: sorted(c.customer_id for c in v) for k, v in got.items()} == {
        "li": ["n-1", "n-2"], "ada": ["s-1", "s-2", "x-1"]}
    # a store-bound colleague takes their store's customers only; none may have south's here
    got, kept = deal(items, [staff("li", "north"), staff("mo", "north")])
    assert sorted(c.customer_id for c in kept) == ["s-1", "s-2", "x-1"]
    assert Counter(len(v) for v in got.values()) == Counter([1, 1])


def test_the_order_is_risk_then_name_and_ties_go_to_the_first_named() -> None:
    items = [owned("c-3", "low", name="Zoe"), owned("c-2", "high", name="bea"),
             owned("c-1", "high", name="Al")]
    got, _ = deal(items, [staff("li", None), staff("mo", None)])
    assert [c.customer_id for c in got["li"]] == ["c-1", "c-3"]
    assert [c.customer_id for c in got["mo"]] == ["c-2"]
    assert deal([], [staff("li", None), staff("mo", None)]) == ({"li": [], "mo": []}, [])
