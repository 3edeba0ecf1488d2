"""Shops whose customers follow the BG/NBD process (Fader, Hardie & Lee, "Counting your
customers the easy way", 2005), outside the generator's presets.

A customer joins at a uniform time in the first 300/365 of the history, buys at a Poisson rate
drawn from a Gamma(r, alpha) population (per day) and, after each repeat purchase, lapses for
good with a probability drawn from a Beta(a, b) population. A first purchase is never the last
in that model: a one-time buyer is only a slow one. With ``die_first`` a customer may lapse
after their first purchase too, as in a shop where most buy once and never come back.

Used by the default model's training mix (services/training/default_model.py: businesses
unlike the presets, so that it travels) and by ``bench.textbook`` (held-out shops it is judged
on). Every event follows the contract schema; a customer "churned" when they bought nothing
in the ``horizon_days`` after the cut-off (the process knows, the scorer does not).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class World:
    customers: int
    seed: int
    r: float = 0.6        # purchase rates ~ Gamma(shape r, rate alpha) per day: mean r / alpha
    alpha: float = 12.0
    a: float = 1.2        # lapse probability after a repeat purchase ~ Beta(a, b)
    b: float = 4.0
    die_first: bool = False
    prefix: str = "cust"  # customer ids are "<prefix>-00042"


def generate(world: World, *, start: datetime, days: int, horizon_days: int = 90
             ) -> tuple[list[dict[str, Any]], dict[str, bool], datetime]:
    """The world's events up to the cut-off (``start + days``), whether each customer who
    bought before it churned (no purchase in the ``horizon_days`` after it), and the
    cut-off."""
    rng = random.Random(world.seed)
    cut = start + timedelta(days=days)
    end = cut + timedelta(days=horizon_days)
    events: list[dict[str, Any]] = []
    churned: dict[str, bool] = {}
    n = 0
    for i in range(world.customers):
        cid = f"{world.prefix}-{i:05d}"
        rate = rng.gammavariate(world.r, 1 / world.alpha)
        lapse = rng.betavariate(world.a, world.b)
        t = start + timedelta(days=rng.uniform(0, days * 300 / 365))
        first, bought_before, bought_after = True, False, False
        while t < end + timedelta(days=30):
            amount = round(rng.lognormvariate(3.5, 0.6), 2)
            named_store = rng.random() < 0.7  # the rest name no store
            if t <= cut:
                event = {"event_id": f"{world.prefix}-e{n}", "type": "transaction",
                         "customer_id": cid, "occurred_at": t.isoformat(), "amount": amount,
                         "currency": "EUR"}
                if named_store:
                    event["store_id"] = "web"
                events.append(event)
                bought_before = True
            elif t <= end:
                bought_after = True
            n += 1
            if (not first or world.die_first) and rng.random() < lapse:
                break
            first = False
            t += timedelta(days=rng.expovariate(max(rate, 1e-4)))
        if bought_before:
            churned[cid] = not bought_after
    return events, churned, cut


def draw(n: int, *, seed: int, customers: int, prefix: str = "shop") -> list[World]:
    """``n`` worlds with populations drawn at random (``seed``), each log-uniform over a wide
    range of shops: Gamma shape r 0.2-3 and a mean gap between purchases of 4-60 days (alpha =
    r x gap), Beta shapes a 0.3-5 and b 1-10; half of them may lapse after the first purchase
    too. Customer ids ``<prefix><i>-00042``, world ``i`` from 1."""
    rng = random.Random(seed)

    def log_uniform(lo: float, hi: float) -> float:
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))

    worlds = []
    for i in range(n):
        r, gap = log_uniform(0.2, 3.0), log_uniform(4.0, 60.0)
        a, b = log_uniform(0.3, 5.0), log_uniform(1.0, 10.0)
        worlds.append(World(customers, seed * 1000 + i, r=r, alpha=r * gap, a=a, b=b,
                            die_first=rng.random() < 0.5, prefix=f"{prefix}{i + 1}"))
    return worlds
