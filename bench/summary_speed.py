"""How long one scorer step takes on a customer summary: decode the stored blob, fold one new
event, compute the features, encode — for customers with 100 and 1,000 events over a year.

    .venv/bin/python -m bench.summary_speed

Compiled (``make native``, scripts/native.py) and pure Python side by side, in the same run.
"""

from __future__ import annotations

import random
import time
from types import ModuleType

from services.scoring import summary
from services.scoring.features import DAY_MS, Activity

BASE = 20_454 * DAY_MS


def year(n: int, seed: int = 7) -> list[Activity]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = BASE + rng.randrange(365 * DAY_MS)
        eid = f"pos-{i:06d}-{rng.randrange(10_000):04d}"
        if rng.random() < 0.5:
            out.append(Activity("visit", ts, eid, store_id="s1"))
        else:
            out.append(Activity("transaction", ts, eid, store_id="s1",
                                amount=rng.choice([12.5, 18.0, 22.5, 35.0, 42.75, 58.5, 80.0])))
    return out


def per_call_us(fn, rounds: int = 7, n: int = 2000) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        times.append((time.process_time() - t0) / n * 1e6)
    return min(times)  # CPU time, best round: the machine is shared


def measure(events: int, mod: ModuleType) -> str:
    Summary, summarize = mod.Summary, mod.summarize  # noqa: N806  (the module's class)
    acts = year(events)
    s = summarize(acts)
    blob = s.encode()
    assert s.last_ts is not None
    now = s.last_ts + 1
    same_day = [Activity("transaction", s.last_ts, f"new-{i}", amount=25.0)
                for i in range(20_000)]
    next_day = [Activity("visit", s.last_ts + DAY_MS, f"next-{i}") for i in range(20_000)]

    def step(i: int, new: list[Activity] = same_day) -> None:
        t = Summary.decode(blob)
        t.fold(new[i])
        t.features(new[i].ts)
        t.encode()

    decode = per_call_us(lambda i: Summary.decode(blob))
    parts = {
        "decode": decode,
        "fold": per_call_us(lambda i: Summary.decode(blob).fold(same_day[i])) - decode,
        "features": per_call_us(lambda i: s.features(now)),
        "encode": per_call_us(lambda i: Summary.decode(blob).encode()) - decode,
    }
    total = per_call_us(step)
    total_next = per_call_us(lambda i: step(i, next_day))
    fold_all = per_call_us(lambda i: summarize(acts), rounds=3, n=20) / events
    return (f"{events:>5} events over a year: {len(blob)} bytes; decode+fold+features+encode "
          f"{total:.0f} µs (" + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
          + f"); {total_next:.0f} µs when the event starts a new day; "
          f"folding a whole history {fold_all:.1f} µs/event")


def main() -> None:
    kinds = [("compiled (mypyc)", summary)] if summary.NATIVE else []
    kinds.append(("pure Python", summary.load_pure()))
    if not summary.NATIVE:
        print("(not compiled here: `make native`)")
    for name, mod in kinds:
        print(name)
        for events in (10, 150, 1000):
            print(measure(events, mod))


if __name__ == "__main__":
    main()
