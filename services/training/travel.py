"""Does a model travel to a business it was never trained on? A leave-one-business-out check.

For every business (generator preset) in turn: the model is trained on the *other* businesses
with the recipe of ``churnwatch train`` (candidates compared by time-ordered cross-validation
on the fit dates, the best one fitted on the fit dates and calibrated on the calibration
dates) and judged on the held-out business's time holdout — the last observation dates, whose
labels begin after every training label ended (a purge gap of one horizon), as in
``churnwatch train``. Beside it on the same rows:

- **recency alone** (days since the last activity): needs no training, so it is what any
  business gets out of the box; the travelling model must rank at least as well — on the
  same rows, not below it by more than two standard errors of the paired difference
  (DeLong): where recency is already near the ceiling (a school, whose leavers simply stop
  coming) a tie is all any model can get;
- **BG/NBD fitted on the held-out business itself** (its own fit dates): what the business
  would get from the classic statistical model fitted on its own history — a reference the
  travelling model does not have to beat;
- **the model trained on every business** (the held-out one included, same recipe): what the
  business costs the model by being unseen.

All businesses share the same observation dates (from the earliest event of any of them) so
"the holdout" means the same weeks everywhere. Used by ``make model``
(:mod:`services.training.default_model`), which stores the result in the shipped report under
``travel`` (docs/model.md, "The default model").
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from services.scoring.drift import auc_difference
from services.synth import write_ndjson
from services.training.dataset import Snapshots, build_snapshots, observation_dates, read_events
from services.training.train import (
    _RECENCY,
    CANDIDATES,
    Calibration,
    _choose,
    _day,
    _fit_calibrated,
    _select,
    bootstrap_auc,
    customer_mask,
    evaluate,
    plan_split,
)


def concat(parts: Sequence[Snapshots]) -> Snapshots:
    """The snapshots of several businesses (observed at the same dates) as one data set."""
    return Snapshots(X=np.vstack([p.X for p in parts]), y=np.concatenate([p.y for p in parts]),
                     obs_ms=np.concatenate([p.obs_ms for p in parts]),
                     customers=[c for p in parts for c in p.customers], dates=parts[0].dates,
                     horizon_days=parts[0].horizon_days)


def leave_one_out(histories: Mapping[str, Sequence[dict[str, Any]]], *, until: datetime,
                  horizon_days: int, seed: int = 0, candidates: Sequence[str] = tuple(CANDIDATES),
                  calibration: Calibration = "sigmoid", held_out: Sequence[str] | None = None,
                  calibrate_on: Callable[[str], bool] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Train on all businesses but one, judge on that one's holdout; for every business of
    ``held_out`` (default: every one). ``calibrate_on``: the customers whose snapshots
    calibrate the probabilities, as in ``train`` (default: all).

    ``histories`` maps a business name to its events (contract-schema dicts; customer ids must
    not collide between businesses). Returns the JSON-ready result stored as ``travel``."""
    if len(histories) < 2:
        raise ValueError("leave-one-out needs at least two businesses")
    with threadpool_limits(1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        logs = {}
        for name, events in histories.items():
            path = Path(tmp) / f"{name}.ndjson"
            write_ndjson(events, path)
            logs[name] = read_events(path, until)
    until_ms = next(iter(logs.values())).until_ms
    dates = observation_dates(min(lg.first_ms for lg in logs.values()), until_ms, horizon_days)
    split = plan_split(dates, horizon_days)
    snaps = {name: build_snapshots(lg.activities, dates, horizon_days, until_ms=until_ms)
             for name, lg in logs.items()}
    learned = [n for n in candidates if n in CANDIDATES]

    def fit(parts: Sequence[Snapshots]) -> tuple[str, Any]:
        data = concat(parts)
        best = _choose(_select(data, split, seed, lambda s: None, None, learned))
        model, _ = _fit_calibrated(best, data, split.fit, split.calibration, seed, calibration,
                                   customer_mask(data, calibrate_on))
        return best, model

    rows = []
    with threadpool_limits(1, user_api="blas"):
        _, seen_model = fit(list(snaps.values()))
        for name, own in snaps.items():
            if held_out is not None and name not in held_out:
                continue
            chosen, model = fit([s for other, s in snaps.items() if other != name])
            bgnbd, _ = _fit_calibrated("bg_nbd", own, split.fit, split.calibration, seed,
                                       calibration)
            hold = own.rows_at(split.holdout)
            X, y = own.X[hold], own.y[hold]
            score = model.predict_proba(X)[:, 1]
            m = evaluate(y, score)
            r = evaluate(y, X[:, _RECENCY], probabilities=False)
            b = evaluate(y, bgnbd.predict_proba(X)[:, 1])
            s = evaluate(y, seen_model.predict_proba(X)[:, 1])
            trained_on = [o for o in snaps if o != name]
            row: dict[str, Any] = {"held_out": name, "trained_on": trained_on,
                   "chosen": chosen, "rows": m.rows, "churned": m.churned,
                   "model_roc_auc": m.roc_auc, "model_roc_auc_ci": bootstrap_auc(y, score, seed=seed),
                   "recency_roc_auc": r.roc_auc, "bg_nbd_own_roc_auc": b.roc_auc,
                   "seen_roc_auc": s.roc_auc, "model_brier": m.brier,
                   "model_lift_at_10": m.lift_at_10, "recency_lift_at_10": r.lift_at_10}
            row["beats_recency"] = (m.roc_auc is not None and r.roc_auc is not None
                                    and m.roc_auc >= r.roc_auc)
            # Paired on the same rows (DeLong): on a business whose churners simply stop
            # coming, recency alone is near the ceiling and the model can only tie it; a tie
            # is "as well as", a difference beyond two standard errors is not. A customer's
            # rows at several holdout dates are not independent, so the error is if anything
            # too small: the check is strict, not lenient.
            diff = auc_difference(y, score, X[:, _RECENCY])
            row["over_recency"] = None if diff is None else diff[0]
            row["over_recency_stderr"] = None if diff is None else diff[1]
            row["not_below_recency"] = diff is not None and diff[0] + 2 * diff[1] >= 0
            log(f"held out {name}: model ({chosen}, trained on {', '.join(trained_on)}) "
                f"ROC AUC {m.roc_auc} · recency {r.roc_auc} · BG/NBD on its own data "
                f"{b.roc_auc} · trained with it {s.roc_auc}")
            rows.append(row)
    return {"method": "leave one business out: trained on the others (same recipe, fit and "
                      "calibration dates), judged on the held-out business's time holdout",
            "horizon_days": horizon_days, "until": until.isoformat(),
            "customers": {name: lg.n_customers for name, lg in logs.items()},
            "holdout": [_day(split.holdout[0]), _day(split.holdout[-1])],
            "holdout_dates": len(split.holdout), "calibration": calibration,
            "presets": rows,
            "all_beat_recency": all(r["beats_recency"] for r in rows),
            "none_below_recency": all(r["not_below_recency"] for r in rows)}


def to_text(travel: Mapping[str, Any]) -> str:
    """The leave-one-out table, as ``make model`` prints it."""
    lines = [f"Travel: leave one business out, holdout {travel['holdout'][0]} .. "
             f"{travel['holdout'][1]} ({travel['holdout_dates']} dates), ROC AUC",
             f"  {'held out':<12}{'rows':>7}{'churned':>9}{'model':>8}{'95% CI':>15}"
             f"{'recency':>9}{'± (model - recency)':>22}{'BG/NBD own':>12}{'seen':>7}"]
    for r in travel["presets"]:
        ci = r["model_roc_auc_ci"]
        ci_s = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "—"

        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}"

        d, se = r.get("over_recency"), r.get("over_recency_stderr")
        d_s = "—" if d is None or se is None else f"{d:+.4f} ± {se:.4f}"
        mark = ("" if r["beats_recency"] else
                "   < recency: a tie" if r.get("not_below_recency") else "   < recency")
        lines.append(f"  {r['held_out']:<12}{r['rows']:>7,}{r['churned']:>9,}"
                     f"{f(r['model_roc_auc']):>8}{ci_s:>15}{f(r['recency_roc_auc']):>9}"
                     f"{d_s:>22}{f(r['bg_nbd_own_roc_auc']):>12}{f(r['seen_roc_auc']):>7}"
                     + mark)
    lines.append("  model: trained on the other businesses; recency: days since the last "
                 "activity; ± (model - recency): the paired difference and its standard error "
                 "(DeLong), a tie when within two; BG/NBD own: fitted on the held-out "
                 "business's own history; seen: the same recipe trained on every business")
    return "\n".join(lines)
