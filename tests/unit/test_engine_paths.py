"""A customer's tier path is a function of their events alone: assessing after each event in
one call (``Engine.assess_paths`` with steps, as the scorer does for a batch holding several
of one customer's events) equals assessing event by event (batches of one)."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.scoring.engine import Engine, Step, Subject
from services.scoring.scorecard import Scorecard
from services.scoring.summary import Summary
from services.scoring.tiers import Thresholds
from tests.data import T0, by_time, complaint, regular
from tests.unit.test_features import acts

DAY = 86_400_000


def _history() -> list:
    events = regular("c", every_days=7, count=12)
    events.append(complaint("c", T0 + timedelta(days=40), 1, severity="high", ref="k"))
    events.append(complaint("c", T0 + timedelta(days=52), 2, severity="high", status="resolved",
                            ref="k"))
    events += regular("c", every_days=7, count=3, start=T0 + timedelta(days=150))
    return acts(by_time(events))


def test_one_call_along_the_path_equals_one_event_at_a_time() -> None:
    engine = Engine(Scorecard(), Thresholds(min_dwell_ms=3 * DAY))
    history = _history()
    # event by event: fold, assess at the newest event, carry the tier
    one_by_one = []
    summary, tier, since = Summary.empty(), None, None
    for a in history:
        summary.fold(a)
        now = summary.last_ts
        assert now is not None
        [r] = engine.assess([Subject("c", (), summary.first_ts, tier, since, summary=summary)], now)
        if r.tier != tier:
            tier, since = r.tier, now
        one_by_one.append(r)
    # one call: the steps are the points before the last event
    summary, steps = Summary.empty(), []
    for i, a in enumerate(history):
        if i:
            last = summary.last_ts
            assert last is not None
            steps.append(Step(last, summary.features(last, summary.first_ts)))
        summary.fold(a)
    assert summary.last_ts is not None
    [path] = engine.assess_paths([Subject("c", (), summary.first_ts, summary=summary)],
                                 summary.last_ts, steps=[steps])
    assert [(x.tier, round(x.score, 9), x.as_of_ms) for x in path] == \
        [(x.tier, round(x.score, 9), x.as_of_ms) for x in one_by_one]
    assert [x.reasons for x in path] == [x.reasons for x in one_by_one]
    assert [x.lifecycle_stage for x in path] == [x.lifecycle_stage for x in one_by_one]
    assert "won_back" in {x.lifecycle_stage for x in path}  # back after ~70 silent days
    assert len({x.tier for x in path}) > 1, "the history should move the tier"


def test_assess_is_the_last_point_of_a_path_without_steps() -> None:
    engine = Engine(Scorecard(), Thresholds())
    history = _history()
    summary = Summary.empty()
    for a in history:
        summary.fold(a)
    assert summary.last_ts is not None
    s = Subject("c", (), summary.first_ts, "medium", summary.last_ts - DAY, summary=summary)
    [plain] = engine.assess([s], summary.last_ts + 30 * DAY)
    [[only]] = engine.assess_paths([s], summary.last_ts + 30 * DAY)
    assert plain == only


def test_the_hot_paths_reasons_and_their_json_are_what_pydantic_gives() -> None:
    """The scorer builds reasons without validating them again and writes their JSON by hand
    (pydantic's validator and serializer cost several µs a reason): the same objects and the
    same JSON as the validated models give, for the shipped model's explanations and rules."""
    from services.common.riskchange import Reason, SuggestedAction
    from services.scoring.model import load_model
    from services.scoring.rules import load_rules

    model = load_model(None)
    assert getattr(model, "attributions", None) is not None, "the shipped model explains"
    engine = Engine(model, Thresholds(), rules=load_rules(business_type="salon"))
    history = _history()
    summary = Summary.empty()
    seen: set[str] = set()
    for a in history:
        summary.fold(a)
        for later in (0, 40, 120):
            now = (summary.last_ts or 0) + later * DAY
            [r] = engine.assess([Subject("c", (), summary.first_ts, summary=summary)], now,
                                with_history=False)
            doc = r.to_json()
            assert doc["reasons"] == [x.model_dump() for x in r.reasons]
            assert doc["suggested_action"] == r.action.model_dump()
            assert all(Reason.model_validate(x.model_dump()) == x for x in r.reasons)
            assert SuggestedAction.model_validate(r.action.model_dump()) == r.action
            seen |= {x.code for x in r.reasons}
    assert len(seen) >= 3, seen  # explanations and a rule, not only "regular"


_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.floats(-2e6, 2e6), st.floats(-1e-5, 1e-5),
    # next to a half of the sixth decimal, where the shortcut must step aside
    st.tuples(st.integers(-10**12, 10**12), st.integers(-3, 3)).map(
        lambda t: math.nextafter((t[0] + 0.5) / 1e6, math.inf) if t[1] > 0 else
        math.nextafter((t[0] + 0.5) / 1e6, -math.inf) if t[1] < 0 else (t[0] + 0.5) / 1e6),
    st.integers(-10**18, 10**18).map(float))


@given(_VALUES)
def test_features_are_rounded_as_round_rounds_them(v: float) -> None:
    """The stored features skip round()'s decimal conversion where the result is known
    without it: the same value, sign of zero included."""
    from services.scoring.engine import round6

    got, want = round6(v), round(v, 6)
    assert got == want and math.copysign(1, got) == math.copysign(1, want)


@given(st.lists(st.lists(_VALUES, min_size=3, max_size=3), max_size=6),
       st.lists(_VALUES, max_size=2))
def test_a_batch_of_features_is_rounded_as_round_rounds_each(rows: list[list[float]],
                                                              odd: list[float]) -> None:
    """round6_rows (one numpy pass for a batch) gives every value exactly round(v, 6), sign
    of zero included, also for a row whose keys differ from the first row's."""
    from services.scoring.engine import round6_rows

    dicts: list[dict[str, float]] = [dict(zip("abc", r, strict=True)) for r in rows]
    dicts.append({f"x{i}": v for i, v in enumerate(odd)})
    got = round6_rows(dicts)
    assert [list(g) for g in got] == [list(d) for d in dicts]
    for g, d in zip(got, dicts, strict=True):
        for k, v in d.items():
            want = round(v, 6)
            assert type(g[k]) is float
            assert g[k] == want and math.copysign(1, g[k]) == math.copysign(1, want), (v, g[k])
