"""Shops from the textbook, outside the generator's presets: does the packaged default model
rank customers at least as well as recency alone on a business unlike any it was trained on,
and what does ``churnwatch train`` on the shop's own year give?

Each world is an online shop whose customers follow the BG/NBD process (Fader, Hardie & Lee,
"Counting your customers the easy way", 2005): a customer joins at a uniform time in the first
300/365 of the year, buys at a Poisson rate drawn from a Gamma(r, alpha) population and, after
each repeat purchase, lapses for good with a probability drawn from a Beta(a, b) population.
A first purchase is never the last in that model: a one-time buyer is only a slow one. With
``die_first`` a customer may lapse after their first purchase too, as in a shop where most
buy once and never come back. The year ends at the cut-off; a customer "churned" when they
bought nothing in the 90 days after it (the generator knows, the scorer does not).

    .venv/bin/python -m bench.textbook [--train] [world ...]
    .venv/bin/python -m bench.textbook --drawn N [--train]
    .venv/bin/python -m bench.textbook --populations

``--drawn N`` judges the default model on ``N`` shops whose populations are drawn at random
exactly as its four training shops were (services/synth/process.py, ``draw``), with another
seed: none of them was trained on.

``--populations`` measures a design not built (docs/model.md, "The default model"): the
default model's recipe (the portable logistic regression) left out of one business at a
time — the four presets and the four textbook shops, two years each, a 60-day horizon, the
last three observation dates held out — with BG/NBD's columns computed from the population
parameters of all training businesses pooled, as the shipped model has them, against each
business's own (the held-out one's fitted on its own customers' features, no labels: what a
scorer could fit per tenant); and the same for each textbook shop with the model trained on
the presets alone.

Per world: ROC AUC at the cut-off of the default model (the features the scorer computes for
a read ``as_of`` the cut-off, through the same code) and of recency alone; with ``--train``,
of the model ``churnwatch train --until <cut-off> --horizon-days 90`` ships from the world's
year, and which one it chose. Pure computation: no broker or Redis.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from services.scoring.features import FEATURE_NAMES
from services.scoring.model import load_model, predict_features
from services.synth import PRESETS, process, write_ndjson
from services.synth import generate as generate_preset
from services.synth.process import World
from services.training import bgnbd, train
from services.training.dataset import build_snapshots, observation_dates, read_events, snapshot
from services.training.train import PORTABLE_FEATURES

START = datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1)))
DAYS = 365
HORIZON_DAYS = 90
# ``--drawn``: shops drawn like the default model's training shops (services/synth/process.py,
# ``draw``), with another seed, so none of them was trained on
DRAWN_SEED = 2027
DRAWN_CUSTOMERS = 3000


WORLDS: dict[str, World] = {
    "slow-lapsing": World(4000, 7),
    "fast-lapsing": World(8000, 11, a=3.0, b=2.0),
    "slow-lapsing-once": World(6000, 13, die_first=True),
    "fast-lapsing-once": World(8000, 17, a=3.0, b=2.0, die_first=True),
}


def generate(world: World, *, start: datetime = START, days: int = DAYS
             ) -> tuple[list[dict[str, Any]], dict[str, bool], datetime]:
    """The world's events up to the cut-off (``start + days``), whether each customer who
    bought before it churned (no purchase in the :data:`HORIZON_DAYS` after it), and the
    cut-off (services/synth/process.py)."""
    return process.generate(world, start=start, days=days, horizon_days=HORIZON_DAYS)


def _rows(path: Path, cut: datetime) -> Iterator[tuple[str, dict[str, float]]]:
    log = read_events(path, cut)
    cut_ms = int(cut.timestamp() * 1000)
    for cid, acts in log.activities.items():
        features = snapshot(acts, cut_ms)
        if features is not None:
            yield cid, features


def measure(name: str, world: World, *, train_model: bool = False) -> dict[str, Any]:
    events, churned, cut = generate(world)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.ndjson"
        write_ndjson(events, path)
        cids, rows = zip(*_rows(path, cut), strict=True)
        y = np.array([churned[c] for c in cids], dtype=int)
        recency = np.array([r["days_since_last_activity"] for r in rows])
        out: dict[str, Any] = {
            "world": name, "customers": len(y), "churned": int(y.sum()), "events": len(events),
            "recency": float(roc_auc_score(y, recency)),
            "default": float(roc_auc_score(y, predict_features(load_model(None), list(rows)))),
        }
        if train_model:
            report = train(events_path=path, until=cut, horizon_days=HORIZON_DAYS,
                           out=Path(tmp) / "model.joblib", seed=0)
            trained = load_model(Path(tmp) / "model.joblib")
            out["trained"] = float(roc_auc_score(y, predict_features(trained, list(rows))))
            out["trained_name"] = report.model_name
    return out


def populations(customers: int = 600, seed: int = 2026, horizon_days: int = 60,
                holdout_dates: int = 3) -> list[dict[str, Any]]:
    """Leave one business out, the portable recipe with pooled vs each business's own BG/NBD
    population (see the module's docstring); ROC AUC on the held-out business's last
    ``holdout_dates`` observation dates, beside recency alone."""
    until = datetime(2026, 6, 30, tzinfo=UTC)
    start = until - timedelta(days=730)
    histories: dict[str, list[dict[str, Any]]] = {
        p: generate_preset(preset=p, customers=customers, seed=seed, start=start, end=until)[0]
        for p in PRESETS}
    for name, world in WORLDS.items():
        histories[name] = generate(world, start=start, days=730)[0]
    data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, events in histories.items():
            path = Path(tmp) / f"{name}.ndjson"
            write_ndjson(events, path)
            log = read_events(path, until)
            dates = observation_dates(log.first_ms, log.until_ms, horizon_days)
            snaps = build_snapshots(log.activities, dates, horizon_days, until_ms=log.until_ms)
            data[name] = (snaps.X, snaps.y, snaps.rows_at(dates[-holdout_dates:]))
    cols = [FEATURE_NAMES.index(f) for f in PORTABLE_FEATURES]
    xc, txc, tc = bgnbd.X_COL, bgnbd.TX_COL, bgnbd.T_COL

    def population(X: np.ndarray) -> bgnbd.Params:
        return bgnbd.fit(X[:, xc], X[:, txc], X[:, tc])

    def design(X: np.ndarray, p: bgnbd.Params) -> np.ndarray:
        # the portable recipe's columns: its features and BG/NBD's three under population p
        step = bgnbd.BGNBDFeatures(horizon_days)
        step.params_ = p
        return np.arcsinh(np.column_stack([X[:, cols], step.transform(X)[:, X.shape[1]:]]))

    own = {name: population(X) for name, (X, _, _) in data.items()}
    recency = FEATURE_NAMES.index("days_since_last_activity")

    def judge(held: str, others: list[str], trained_on: str) -> dict[str, Any]:
        X_fit = np.vstack([data[n][0][~data[n][2]] for n in others])
        y_fit = np.concatenate([data[n][1][~data[n][2]] for n in others])
        pooled = population(X_fit)
        X_held, y_held, hold = data[held]
        row: dict[str, Any] = {"held_out": held, "trained_on": trained_on,
                               "rows": int(hold.sum()),
                               "recency": float(roc_auc_score(y_held[hold],
                                                              X_held[hold][:, recency]))}
        for mode in ("pooled", "own"):
            fit_rows = (design(X_fit, pooled) if mode == "pooled" else
                        np.vstack([design(data[n][0][~data[n][2]], own[n]) for n in others]))
            scaler = StandardScaler().fit(fit_rows)
            clf = LogisticRegression(C=0.5, max_iter=3000).fit(scaler.transform(fit_rows), y_fit)
            rows = design(X_held[hold], pooled if mode == "pooled" else own[held])
            row[mode] = float(roc_auc_score(y_held[hold],
                                            clf.predict_proba(scaler.transform(rows))[:, 1]))
        return row

    out = [judge(held, [n for n in data if n != held], "others") for held in data]
    out += [judge(held, list(PRESETS), "presets") for held in WORLDS]
    return out


def populations_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for trained_on, title in (("others", "trained on the seven other businesses"),
                              ("presets", "trained on the four presets alone")):
        lines += [f"Held out, the portable recipe {title}, ROC AUC on the held-out business's "
                  "last 3 observation dates (60-day horizon)",
                  f"  {'held out':<20}{'rows':>7}{'recency':>9}{'pooled':>9}{'own':>9}"]
        lines += [f"  {r['held_out']:<20}{r['rows']:>7,}{r['recency']:>9.3f}{r['pooled']:>9.3f}"
                  f"{r['own']:>9.3f}" for r in rows if r["trained_on"] == trained_on]
    lines.append("  pooled: BG/NBD's population fitted on the training businesses together (as "
                 "shipped); own: each business's own, the held-out one's from its customers' "
                 "features")
    return "\n".join(lines)


def to_text(results: list[dict[str, Any]]) -> str:
    lines = ["Textbook shops (BG/NBD process), ROC AUC at the cut-off, churn = no purchase in "
             f"the {HORIZON_DAYS} days after it",
             f"  {'world':<20}{'customers':>10}{'churned':>9}{'recency':>9}{'default':>9}"
             f"{'trained':>9}  chosen"]
    for r in results:
        below = "  < recency" if r["default"] < r["recency"] else ""
        trained = f"{r['trained']:>9.3f}  {r['trained_name']}" if "trained" in r else ""
        lines.append(f"  {r['world']:<20}{r['customers']:>10,}{r['churned']:>9,}"
                     f"{r['recency']:>9.3f}{r['default']:>9.3f}{trained}{below}")
    lines.append("  default: the packaged model; trained: `churnwatch train` on the world's own "
                 "year; -once: a customer may lapse after the first purchase")
    return "\n".join(lines)


def drawn_text(shops: list[World], results: list[dict[str, Any]]) -> str:
    lines = [f"  drawn (seed {DRAWN_SEED}): population, and the default model's ROC AUC above "
             "recency alone"]
    for w, r in zip(shops, results, strict=True):
        lines.append(f"  {w.prefix:<8} r={w.r:.2f} alpha={w.alpha:.1f} a={w.a:.2f} b={w.b:.2f}"
                     f"{' lapses after the first' if w.die_first else '':<24}"
                     f"{r['default'] - r['recency']:+.3f}")
    gains = [r["default"] - r["recency"] for r in results]
    lines.append(f"  above recency: {sum(g >= 0 for g in gains)} of {len(gains)}, mean "
                 f"{sum(gains) / len(gains):+.3f}, least {min(gains):+.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.textbook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true",
                        help="also train on each world's year and score with that model")
    parser.add_argument("worlds", nargs="*", metavar="world",
                        help=f"any of {', '.join(WORLDS)} (default: all)")
    parser.add_argument("--drawn", type=int, metavar="N",
                        help="judge the default model on N shops whose populations are drawn "
                             "at random (another seed than the default model's training shops)")
    parser.add_argument("--populations", action="store_true",
                        help="leave one business out: pooled vs each business's own BG/NBD "
                             "population (a design not built)")
    args = parser.parse_args(argv)
    if args.populations:
        print(populations_text(populations()))
        return 0
    if args.drawn is not None:
        if args.drawn < 1:
            parser.error("--drawn needs at least one shop")
        shops = process.draw(args.drawn, seed=DRAWN_SEED, customers=DRAWN_CUSTOMERS)
        results = [measure(w.prefix, w, train_model=args.train) for w in shops]
        print(to_text(results))
        print(drawn_text(shops, results))
        return 0
    unknown = [w for w in args.worlds if w not in WORLDS]
    if unknown:
        parser.error(f"unknown world {unknown[0]!r}; choose from {', '.join(WORLDS)}")
    names = args.worlds or list(WORLDS)
    results = [measure(n, WORLDS[n], train_model=args.train) for n in names]
    print(to_text(results))
    return 0 if all(math.isfinite(r["default"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
