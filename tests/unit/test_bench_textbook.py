"""The textbook shops of ``bench.textbook`` are the BG/NBD process they claim to be: fitting
BG/NBD's likelihood to what they generate gives back the population they were drawn from."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import numpy as np
import pytest

from bench.textbook import World, generate, main
from services.training.bgnbd import fit


def _repeat_buying(events: list[dict], cut: datetime) -> tuple[np.ndarray, ...]:
    times: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        times[e["customer_id"]].append(datetime.fromisoformat(e["occurred_at"]))
    rows = []
    for ts in times.values():
        ts.sort()
        rows.append((len(ts) - 1, (ts[-1] - ts[0]).total_seconds() / 86400,
                     (cut - ts[0]).total_seconds() / 86400))
    return tuple(np.array(col, dtype=float) for col in zip(*rows, strict=True))


def test_bgnbd_fitted_to_a_textbook_shop_recovers_its_population() -> None:
    world = World(3000, 5, r=0.8, alpha=20.0, a=1.5, b=3.0)
    events, churned, cut = generate(world, days=730)
    assert all(datetime.fromisoformat(e["occurred_at"]) <= cut for e in events)
    assert set(churned) == {e["customer_id"] for e in events}  # labelled: seen before the cut
    p = fit(*_repeat_buying(events, cut))
    for got, want in ((p.r, world.r), (p.alpha, world.alpha), (p.a, world.a), (p.b, world.b)):
        assert got == pytest.approx(want, rel=0.2)


def test_lapsing_after_the_first_purchase_leaves_more_one_time_buyers() -> None:
    def one_time_share(world: World) -> float:
        events, _, cut = generate(world)
        x, _, _ = _repeat_buying(events, cut)
        return float((x == 0).mean())

    assert one_time_share(World(2000, 3, a=3.0, b=2.0, die_first=True)) > \
        one_time_share(World(2000, 3, a=3.0, b=2.0)) + 0.2


def test_an_unknown_world_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["nowhere"])
    assert "slow-lapsing" in capsys.readouterr().err
