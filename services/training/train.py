"""``churnwatch train``: choose, calibrate, evaluate and save the churn model.

Every split is by observation date and respects time: a model is only ever fitted on
snapshots whose labels were fully observed before the first date it is judged on (a purge gap
of one horizon), so no evaluation number leans on the future.

- the last observation dates are the **holdout**; the labelled dates before them are split
  into **fit** dates and, right after them, **calibration** dates;
- the candidates (logistic regression, random forest, gradient boosting) are compared by
  time-ordered cross-validation on the fit dates (expanding window, mean ROC AUC);
- the winner is fitted on the fit dates, calibrated on the calibration dates and evaluated on
  the holdout against two baselines: recency alone and the rule scorecard;
- the artifact is the same recipe refitted on the latest data (all dates but the last few,
  which calibrate it), saved with :func:`services.scoring.model.save_artifact`, with a linear
  surrogate of it that explains scores cheaply (:func:`fit_explainer`).

Every candidate starts with :class:`~services.training.bgnbd.BGNBDFeatures`: BG/NBD's
P(alive) and P(silent over the horizon), with population parameters fitted on the fit dates —
the statistical model of non-contractual churn, as features the learner can build on.
Beside the model: ``<out>.report.json``, ``<out>.card.json`` and the ROC and calibration
plots ``<out>.roc.png``, ``<out>.calibration.png`` (see docs/model.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from services.scoring.drift import build_reference, calibration
from services.scoring.features import DAY_MS, FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from services.scoring.model import save_artifact
from services.scoring.scorecard import Scorecard
from services.training.bgnbd import BGNBDFeatures
from services.training.classics import BGNBDModel, ParetoNBDModel, RecencyModel
from services.training.dataset import (
    HISTORY_PAST_HORIZON_DAYS,
    Snapshots,
    build_snapshots,
    history_advice,
    iso,
    observation_dates,
    read_events,
    read_stores,
)
from services.training.exceptions import TrainingError
from services.training.progress import Progress

HOLDOUT_SHARE = 0.2       # of the observation dates, at least MIN_HOLDOUT_DATES
MIN_HOLDOUT_DATES = 2
CALIBRATION_SHARE = 0.12  # of the observation dates, at least MIN_CALIBRATION_DATES
MIN_CALIBRATION_DATES = 2
MIN_FIT_DATES = 2
CV_FOLDS = 3
TIE_TOLERANCE = 0.002     # a simpler candidate within this ROC AUC of the best is preferred
TOP_SHARE = 0.10          # "riskiest 10%" for recall and lift
ACTIVE_DAYS = 90          # the "recently active" segment of the evaluation
MIN_HOLDOUT_POSITIVES = 50
MAX_FIT_ROWS = 200_000    # candidates are fitted on at most this many rows (a seeded sample)
EXPLAIN_ROWS = 50_000
CALIBRATION_BINS = 10
_RECENCY = FEATURE_NAMES.index("days_since_last_activity")


def _compress(X: np.ndarray) -> np.ndarray:
    # arcsinh tames the heavy tails of spend and day counts (and keeps refunds' sign)
    return np.arcsinh(X)


def _logistic(seed: int, horizon_days: int) -> Any:
    return Pipeline([("bgnbd", BGNBDFeatures(horizon_days)),
                     ("compress", FunctionTransformer(_compress)), ("scale", StandardScaler()),
                     ("clf", LogisticRegression(C=0.5, max_iter=3000))])


# Features that mean the same in a salon, a restaurant and an online shop: recency itself, the
# customer's recency against their own rhythm, trends against their own yearly rate,
# grievances and refunds, and (from the BG/NBD step) P(alive), P(silent over the horizon) and the
# expected purchase rate. Left out: counts and spend over fixed windows (30/90/365 days) and
# tenure, whose meaning depends on how often a business's customers come at all — a model
# leaning on them ranks well on the businesses it saw and worse than recency alone on a
# faster-paced one it did not (docs/model.md, "The default model").
PORTABLE_FEATURES = ("days_since_last_activity", "overdue_ratio", "has_cadence",
                     "frequency_trend", "spend_trend", "ticket_trend", "complaints_90",
                     "complaints_365", "open_complaints", "open_high_complaints", "refunds_90",
                     "online_share_365")


def _columns(X: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    return X[:, list(idx)]


def _portable(seed: int, horizon_days: int) -> Any:
    n = len(FEATURE_NAMES)
    idx = [FEATURE_NAMES.index(f) for f in PORTABLE_FEATURES] + [n, n + 1, n + 2]  # + BG/NBD
    return Pipeline([("bgnbd", BGNBDFeatures(horizon_days)),
                     ("portable", FunctionTransformer(_columns, kw_args={"idx": idx})),
                     ("compress", FunctionTransformer(_compress)), ("scale", StandardScaler()),
                     ("clf", LogisticRegression(C=0.5, max_iter=3000))])


def _boosting(seed: int, horizon_days: int) -> Any:
    return Pipeline([("bgnbd", BGNBDFeatures(horizon_days)),
                     ("clf", HistGradientBoostingClassifier(
                         max_iter=200, learning_rate=0.06, max_depth=5, max_leaf_nodes=24,
                         min_samples_leaf=80, l2_regularization=1.0, early_stopping=False,
                         random_state=seed))])


def _forest(seed: int, horizon_days: int) -> Any:
    return Pipeline([("bgnbd", BGNBDFeatures(horizon_days)),
                     ("clf", RandomForestClassifier(n_estimators=100, max_depth=10,
                                                    min_samples_leaf=40, max_features="sqrt",
                                                    n_jobs=2, random_state=seed))])


# In order of preference when scores tie: simplest and cheapest to serve first.
CANDIDATES: dict[str, Callable[[int, int], Any]] = {
    "logistic_regression": _logistic,
    "gradient_boosting": _boosting,
    "random_forest": _forest,
    "portable_logistic": _portable,
}
# The classics every learned model must beat on the holdout to be shipped (docs/model.md).
CLASSICS: dict[str, Callable[[int, int], Any]] = {
    "recency": lambda seed, horizon: RecencyModel(),
    "bg_nbd": lambda seed, horizon: BGNBDModel(horizon),
    "pareto_nbd": lambda seed, horizon: ParetoNBDModel(horizon),
}
MODELS: dict[str, Callable[[int, int], Any]] = {**CANDIDATES, **CLASSICS}
BOOTSTRAP_ROUNDS = 200
Calibration = Literal["sigmoid", "legacy"]
LEGACY_ISOTONIC_MIN_ROWS = 5000
LEGACY_ISOTONIC_MIN_CLASS = 500


@dataclass(frozen=True)
class Metrics:
    rows: int
    churned: int
    roc_auc: float | None
    pr_auc: float | None
    brier: float | None       # None for scores that are not probabilities
    recall_at_10: float | None
    lift_at_10: float | None
    roc_auc_ci: list[float] | None = None  # 95% bootstrap interval (holdout only)


def evaluate(y: np.ndarray, score: np.ndarray, *, probabilities: bool = True) -> Metrics:
    """ROC AUC, PR AUC, Brier, and recall and lift in the riskiest 10% (None when undefined)."""
    y = np.asarray(y, dtype=int)
    n, pos = len(y), int(y.sum())
    if n == 0 or pos in (0, n):
        return Metrics(n, pos, None, None, None, None, None)
    k = max(1, math.ceil(TOP_SHARE * n))
    top = y[np.argsort(-score, kind="stable")[:k]]
    return Metrics(
        rows=n, churned=pos,
        roc_auc=round(float(roc_auc_score(y, score)), 4),
        pr_auc=round(float(average_precision_score(y, score)), 4),
        brier=round(float(brier_score_loss(y, score)), 4) if probabilities else None,
        recall_at_10=round(float(top.sum() / pos), 4),
        lift_at_10=round(float(top.mean() / (pos / n)), 3),
    )


@dataclass(frozen=True)
class Split:
    """Observation dates of one role; every date is a UTC midnight in epoch ms."""

    fit: list[int]
    calibration: list[int]
    holdout: list[int]
    final_fit: list[int]
    final_calibration: list[int]
    folds: list[tuple[list[int], list[int]]]  # (fit dates, validation dates)
    purged_folds: bool
    purge_days: int = 0  # fit/calibration labels end this long before the holdout starts
    horizon_days: int = 0

    @property
    def full_purge(self) -> bool:
        return self.purge_days >= self.horizon_days


def plan_split(dates: Sequence[int], horizon_days: int) -> Split:
    """Assign observation dates to fit / calibration / holdout, and the CV folds.

    With enough dates the holdout is the last 20% (at least 2), calibration the 12% before it
    (at least 2), and every fit and calibration label ends before the holdout starts (a purge
    gap of one horizon). A shorter history steps down until it fits: one holdout and one
    calibration date, then a purge gap of half a horizon, then none (the report says which)."""
    dates = sorted(dates)
    n, gap = len(dates), horizon_days * DAY_MS
    plans = [(max(MIN_HOLDOUT_DATES, round(HOLDOUT_SHARE * n)),
              max(MIN_CALIBRATION_DATES, round(CALIBRATION_SHARE * n)), horizon_days),
             (1, 1, horizon_days), (1, 1, horizon_days // 2), (1, 1, 0)]
    for n_hold, n_cal, purge in plans:
        holdout = dates[-n_hold:] if n > n_hold else []
        labelled = [d for d in dates if holdout and d < holdout[0]
                    and d + purge * DAY_MS <= holdout[0]]
        if len(labelled) >= n_cal + MIN_FIT_DATES:
            break
    else:
        span = (dates[-1] - dates[0]) / DAY_MS + horizon_days if dates else 0
        raise TrainingError(
            f"too few observation dates: {n} dates between {_day(dates[0]) if dates else '-'} and "
            f"{_day(dates[-1]) if dates else '-'}, and at least 4 are needed (2 to fit, 1 to "
            f"calibrate, 1 to judge). A {horizon_days}-day horizon needs a history of at least "
            f"{horizon_days + HISTORY_PAST_HORIZON_DAYS} days; this one allows about "
            f"{span:.0f}: {history_advice(span)}")
    fit, calibration = labelled[:-n_cal], labelled[-n_cal:]
    folds, purged = _folds(fit, gap, purge=True), True
    if not folds:
        folds, purged = _folds(fit, gap, purge=False), False
    if not folds:  # too few fit dates to cross-validate: select on the calibration dates
        folds, purged = [(fit, calibration)], False
    return Split(fit=fit, calibration=calibration, holdout=holdout, final_fit=dates[:-n_cal],
                 final_calibration=dates[-n_cal:], folds=folds, purged_folds=purged,
                 purge_days=purge, horizon_days=horizon_days)


def _folds(dates: list[int], gap: int, *, purge: bool) -> list[tuple[list[int], list[int]]]:
    """Expanding-window folds: validate on a later block, fit on dates before it (and, with
    ``purge``, only on dates whose labels ended before the block starts)."""
    block = max(1, round(len(dates) / (CV_FOLDS + 3)))
    out = []
    for j in range(CV_FOLDS, 0, -1):
        lo, hi = len(dates) - j * block, len(dates) - (j - 1) * block
        if lo < 1:
            continue
        val = dates[lo:hi]
        fit = [d for d in dates[:lo] if not purge or d + gap <= val[0]]
        if len(fit) >= MIN_FIT_DATES:
            out.append((fit, val))
    return out


def _count(n: int, noun: str) -> str:
    """"1 snapshot", "1,204 snapshots"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _dates(n: int, kind: str = "") -> str:
    """``n`` dates in words for the report: "1 date", "14 observation dates"."""
    return _count(n, f"{kind}date")


def _span(first: str, last: str) -> str:
    """Two ISO instants as days, "2025-08-21 .. 2025-09-18", or the one day when they agree."""
    return first[:10] if first[:10] == last[:10] else f"{first[:10]} .. {last[:10]}"


def _day(ms: int) -> str:
    return iso(ms)[:10]


def _calibrated(estimator: Any, X: np.ndarray, y: np.ndarray,
                calibration: Calibration = "sigmoid") -> tuple[Any, str]:
    """Calibrate a fitted estimator on a later time slice with a sigmoid (Platt scaling).

    A sigmoid is strictly monotone, so the calibrated scores keep the model's order: no
    plateaus of identical scores (isotonic regression makes them, and ties cost ranking).
    ``legacy`` is the recipe the shipped default model had before it was rebuilt on every
    preset (isotonic with plenty of data, else sigmoid), kept to compare: on the rebuilt model
    it ranked no better than the sigmoid (docs/model.md, "The default model")."""
    method = "sigmoid"
    if calibration == "legacy":
        n_min = int(min(y.sum(), len(y) - y.sum()))
        if len(y) >= LEGACY_ISOTONIC_MIN_ROWS and n_min >= LEGACY_ISOTONIC_MIN_CLASS:
            method = "isotonic"
    try:
        from sklearn.frozen import FrozenEstimator
    except ImportError:  # scikit-learn < 1.6
        cal = CalibratedClassifierCV(estimator, method=method, cv="prefit")
    else:
        cal = CalibratedClassifierCV(FrozenEstimator(estimator), method=method)
    cal.fit(X, y)
    return cal, method


def bootstrap_auc(y: np.ndarray, score: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS,
                  seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of the ROC AUC (rows resampled with replacement).

    The scores are sorted once; a resample is then a vector of row counts (how often each row
    was drawn), and its ROC AUC the count-weighted Mann-Whitney statistic over the sorted tie
    groups — the same number ``roc_auc_score(y[idx], score[idx])`` gives, in O(n) per round
    instead of a sort (on 200,000 holdout rows: ~5 ms a round instead of ~150 ms)."""
    y = np.asarray(y, dtype=int)
    if len(y) == 0 or y.min() == y.max():
        return None
    score = np.asarray(score, dtype=float)
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first row of each tie group
    y_sorted = y[order].astype(float)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(rounds):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            aucs.append(_weighted_auc(y_sorted, np.bincount(idx, minlength=len(y))[order],
                                      starts))
    if not aucs:
        return None
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _weighted_auc(y_sorted: np.ndarray, weight: np.ndarray, starts: np.ndarray) -> float:
    """ROC AUC of rows sorted by score (``starts``: where each group of tied scores begins),
    each row counted ``weight`` times: P(a churned row outscores a retained one), ties 1/2."""
    w = weight.astype(float)
    pos = np.add.reduceat(w * y_sorted, starts)
    neg = np.add.reduceat(w - w * y_sorted, starts)
    below = np.cumsum(neg) - neg  # retained rows with a strictly lower score
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


@dataclass
class TrainReport:
    """What ``churnwatch train`` did and how well the chosen model does on the holdout."""

    model_name: str
    model_version: str
    out: str
    report_path: str
    events_path: str
    until: str
    horizon_days: int
    seed: int
    data: dict[str, Any]
    snapshots: dict[str, Any]
    splits: dict[str, dict[str, Any]]
    selection: dict[str, dict[str, Any]]
    calibration: str
    holdout: dict[str, Metrics]
    holdout_active: dict[str, Metrics]
    timings: dict[str, float]
    trained_at: str
    warnings: list[str] = field(default_factory=list)
    calibration_table: list[dict[str, Any]] = field(default_factory=list)
    bgnbd_params: dict[str, float] | None = None
    explainer_r2: float | None = None
    plots: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    classic_params: dict[str, dict[str, float] | None] = field(default_factory=dict)
    # The oracle's holdout ROC AUC from a synthetic history's true churn times (ceiling.py);
    # None when no truth file sits beside the events.
    ceiling: dict[str, Any] | None = None
    # Reference distributions of the training snapshot for drift (services/scoring/drift.py);
    # in the model card and the report's JSON, not in its text.
    reference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        d, s = self.data, self.snapshots
        sel = " · ".join(f"{name} {r['roc_auc']:.3f}" + (" (chosen)" if name == self.model_name else "")
                         for name, r in self.selection.items())
        folds = next(iter(self.selection.values()))["folds"]
        lines = [
            f"churnwatch train: {self.model_name} ({self.model_version}) -> {self.out}",
            "",
            f"Data         {d['first_event'][:10]} .. {d['last_event'][:10]} (until {self.until}): "
            f"{d['events']:,} events, {d['customers']:,} customers; {d['invalid_lines']:,} invalid "
            f"lines, {d['after_until']:,} after --until, {d['duplicates']:,} duplicates skipped",
            *([f"Stores       {d['stores']['stores']} from {d['stores']['file']}: closed days of "
               f"{d['stores']['with_closures']} not counted as silence nor in the horizon, "
               f"{d['stores']['with_time_zone']} on their own time zone"] if "stores" in d else []),
            f"Snapshots    {_dates(s['observation_dates'], 'observation ')} every {s['step_days']} days "
            f"({s['first_observation'][:10]} .. {s['last_observation'][:10]}), {s['rows']:,} rows of "
            f"{s['customers']:,} customers; {s['churn_rate']:.1%} churned within {self.horizon_days} days",
            "Splits       " + " · ".join(
                f"{name} {_dates(sp['dates'])} ({_span(sp['first'], sp['last'])}, {sp['rows']:,} rows)"
                for name, sp in self.splits.items() if name in ("fit", "calibration", "holdout")),
            f"Selection    time-ordered CV, {len(folds)} folds, mean ROC AUC: {sel}",
            f"Calibration  {self.calibration}, on the calibration dates",
        ]
        if self.evidence:
            e = self.evidence
            ci = e.get("model_roc_auc_ci")
            purge = ("a full horizon" if e["purge_days"] >= e["horizon_days"]
                     else f"{e['purge_days']} days (shorter than the {e['horizon_days']}-day "
                          "horizon: a short history)")
            lines.append(f"Evidence     holdout {_dates(e['holdout_dates'])}, {e['holdout_rows']:,} "
                         f"rows, {e['holdout_churned']:,} churned"
                         + (f"; model ROC AUC 95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else "")
                         + f"; purge gap {purge}")
        if self.ceiling and self.ceiling.get("roc_auc") is not None:
            c = self.ceiling
            now = c.get("roc_auc_known_at_date")
            lines.append(f"Ceiling      ROC AUC {c['roc_auc']:.3f} on the holdout for an oracle that "
                         f"knows the generator's true churn times and cadences"
                         + (f" ({now:.3f} knowing only the churns up to each date)"
                            if now is not None else "") + f"; {c['truth']}")
        lines.append("")
        n_hold = self.splits["holdout"]["dates"]
        lines += _table("Holdout: the last " + ("observation date" if n_hold == 1
                                                else f"{n_hold} observation dates"),
                        self.holdout, self.model_name)
        lines += [""] + _table(f"Customers active in the last {ACTIVE_DAYS} days (holdout)",
                               self.holdout_active, self.model_name)
        ff, fc = self.splits["final_fit"], self.splits["final_calibration"]
        lines += ["", f"Saved model: refitted on {_dates(ff['dates'], 'observation ')} "
                      f"(through {ff['last'][:10]}), calibrated on the last "
                      + ("one" if fc["dates"] == 1 else str(fc["dates"])) + "; "
                      f"report {self.report_path}; {self.timings['total']:.1f} s"]
        if self.calibration_table:
            lines += ["", "Calibration (holdout): predicted vs observed churn",
                      f"  {'bin':<10}{'rows':>8}{'predicted':>11}{'observed':>10}"]
            lines += [f"  {r['bin']:<10}{r['rows']:>8,}{r['predicted']:>11.3f}{r['observed']:>10.3f}"
                      for r in self.calibration_table]
        if self.bgnbd_params:
            lines += ["", "BG/NBD population (fitted): " + ", ".join(
                f"{k}={v:.3g}" for k, v in self.bgnbd_params.items())]
        pareto = (self.classic_params or {}).get("pareto_nbd")
        if pareto:
            lines += ["Pareto/NBD population (fitted): " + ", ".join(
                f"{k}={v:.3g}" for k, v in pareto.items())]
        if self.plots:
            lines += ["Plots        " + " · ".join(self.plots.values())]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _labels(model_name: str, keys: Any) -> dict[str, str]:
    """Row labels: the model first, then the best learned model when it was not chosen, then
    the baselines."""
    learned = {k: f"best learned ({k})" for k in keys if k in CANDIDATES}
    return {"model": f"model ({model_name})", **learned,
            **{k: v for k, v in BASELINE_LABELS.items() if k in keys}}


def _table(title: str, metrics: dict[str, Metrics], model_name: str) -> list[str]:
    m = metrics["model"]
    labels = _labels(model_name, metrics)
    out = [f"{title}: {m.rows:,} snapshots, {m.churned:,} churned"
           + (f" ({m.churned / m.rows:.1%})" if m.rows else ""),
           f"  {'':<34}{'ROC AUC':>9}{'95% CI':>15}{'PR AUC':>9}{'Brier':>9}{'Recall@10%':>12}"
           f"{'Lift@10%':>10}"]

    def cell(v: float | None, width: int, fmt: str) -> str:
        return f"{'—' if v is None else format(v, fmt):>{width}}"

    for key, label in labels.items():
        r = metrics[key]
        ci = f"{r.roc_auc_ci[0]:.3f}-{r.roc_auc_ci[1]:.3f}" if r.roc_auc_ci else "—"
        out.append(f"  {label:<34}{cell(r.roc_auc, 9, '.3f')}{ci:>15}{cell(r.pr_auc, 9, '.3f')}"
                   f"{cell(r.brier, 9, '.3f')}{cell(r.recall_at_10, 12, '.1%')}"
                   f"{cell(r.lift_at_10, 10, '.2f')}")
    return out


def train(*, events_path: Path, until: datetime, horizon_days: int, out: Path, seed: int = 0,
          log: Callable[[str], None] = lambda s: None, progress: TextIO | None = None,
          candidates: Sequence[str] | None = None, calibration: Calibration = "sigmoid",
          truth_path: Path | None = None, timezone: str | None = None,
          calibrate_on: Callable[[str], bool] | None = None,
          stores: Path | None = None) -> TrainReport:
    """Train, evaluate and save the churn model from the events at or before ``until``
    (``candidates``: a subset of :data:`MODELS` that may be shipped; default all).

    ``calibrate_on``: the customers (by id) whose snapshots calibrate the probabilities
    (default: every customer's). The default model learns to rank from shops unlike the
    presets but is calibrated on the presets, whose business types' tier levels were set
    against its probabilities (services/training/default_model.py).

    ``timezone``: an IANA zone whose calendar days events written at offset 0 are counted on
    (``churnwatch train --timezone``), as the scorer counts a store's with that zone.

    ``stores``: a JSON file of the stores as ``PUT /v1/stores/{store_id}`` takes them
    (``churnwatch train --stores``): their time zones and closed days count as the scorer
    counts them (:func:`~services.training.dataset.build_snapshots`).

    ``truth_path``: the true churn times of a synthetic history (default: the
    ``<events>.truth.ndjson`` that ``churnwatch generate`` writes, when it exists); the report
    then shows the ceiling an oracle reaches on the holdout (:mod:`.ceiling`)."""
    # One BLAS thread: multi-threaded reductions change the last bits between runs, and the
    # artifact's content hash should not (BLAS is not where training spends its time).
    # One OpenMP thread: gradient boosting's many short parallel regions spin-wait for a
    # thread the OS has descheduled; on a shared 2-core machine a 200,000-row fit took ~50 s
    # with two threads and ~5-8 s with one (same model, bit for bit). The snapshot workers
    # (dataset.py) and the forest's joblib threads still use every core.
    with threadpool_limits(1, user_api="blas"), threadpool_limits(1, user_api="openmp"):
        return _train(events_path=events_path, until=until, horizon_days=horizon_days, out=out,
                      seed=seed, log=log, progress=progress, candidates=candidates,
                      calibration=calibration, truth_path=truth_path, timezone=timezone,
                      calibrate_on=calibrate_on, stores=stores)


def _train(*, events_path: Path, until: datetime, horizon_days: int, out: Path, seed: int,
           log: Callable[[str], None], progress: TextIO | None,
           candidates: Sequence[str] | None, calibration: Calibration,
           truth_path: Path | None = None, timezone: str | None = None,
           calibrate_on: Callable[[str], bool] | None = None,
           stores: Path | None = None) -> TrainReport:
    names = list(candidates or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise TrainingError(f"unknown candidate model(s) {unknown}; choose from {', '.join(MODELS)}")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if horizon_days < 1:
        raise TrainingError(f"--horizon-days must be a positive number of days (got {horizon_days})")
    if out.is_dir():
        raise TrainingError(f"--out {out} is a directory; give the model file path, e.g. {out}/churn.joblib")

    book = read_stores(stores) if stores is not None else None
    if book is not None:
        log(f"{len(book.names)} stores from {stores}: the closed days of {len(book.closures)} "
            "do not count as their customers' silence, nor in the horizon")
    events = read_events(events_path, until, log=log, timezone=timezone, stores=book)
    log(f"read {events.n_events:,} events of {events.n_customers:,} customers "
        f"({events.n_invalid:,} invalid lines, {events.n_after_until:,} after --until, "
        f"{events.n_duplicates:,} duplicates skipped)")
    timings["read"] = _lap(started)

    labels_until = events.until_ms
    if book is not None:
        labels_until = book.labels_known_until(events.until_ms, horizon_days)
    try:
        dates = observation_dates(events.first_ms, labels_until, horizon_days)
    except TrainingError as exc:
        if labels_until == events.until_ms:
            raise
        raise TrainingError(f"{exc}. The stores' closed days do not count in the horizon, so "
                            f"labels are known only for dates up to "
                            f"{iso(labels_until - horizon_days * DAY_MS)[:10]}") from None
    if labels_until < events.until_ms:
        log(f"the closed days lengthen the {horizon_days}-day horizon: observation dates end "
            f"by {iso(labels_until - horizon_days * DAY_MS)[:10]}")
    split = plan_split(dates, horizon_days)
    t = time.perf_counter()
    snaps = build_snapshots(events.activities, dates, horizon_days, until_ms=events.until_ms,
                            progress=progress, stores=book)
    timings["snapshots"] = _lap(t)
    log(f"built {len(snaps):,} snapshots at {len(dates)} observation dates "
        f"({snaps.y.mean():.1%} churned within {horizon_days} days)")
    _check_classes(snaps, split, horizon_days)
    cal_mask = customer_mask(snaps, calibrate_on)

    t = time.perf_counter()
    # Cross-validate the learned models (the classics have nothing to tune); the best one then
    # meets the classics on the holdout, and is shipped only if it beats them all there.
    learned = [n for n in names if n in CANDIDATES]
    selection = _select(snaps, split, seed, log, progress, learned) if learned else {}
    best_learned = _choose(selection) if learned else None
    timings["selection"] = _lap(t)

    t = time.perf_counter()
    hold = snaps.rows_at(split.holdout)
    active = hold & (snaps.X[:, _RECENCY] <= ACTIVE_DAYS)
    fitted: dict[str, Any] = {}
    for name in ([best_learned] if best_learned else []) + list(CLASSICS):
        fitted[name], method = _fit_calibrated(name, snaps, split.fit, split.calibration, seed,
                                               calibration, cal_mask)
    on_holdout = {name: evaluate(snaps.y[hold], m.predict_proba(snaps.X[hold])[:, 1]).roc_auc
                  for name, m in fitted.items()}
    chosen = _ship(best_learned, on_holdout, names)
    log(f"chose {chosen}: holdout ROC AUC "
        + ", ".join(f"{n} {a:.3f}" if a is not None else f"{n} -" for n, a in on_holdout.items()))
    model = fitted[chosen]
    classics = {n: m for n, m in fitted.items() if n in CLASSICS}
    others = {n: m for n, m in fitted.items() if n != chosen}  # shown beside the model
    holdout, curves = _compare(model, snaps.X[hold], snaps.y[hold], others, with_curves=True,
                               seed=seed)
    holdout_active, _ = _compare(model, snaps.X[active], snaps.y[active], others)
    ceiling = _ceiling(events_path, truth_path, snaps, hold, log)
    timings["evaluation"] = _lap(t)

    t = time.perf_counter()
    final, _ = _fit_calibrated(chosen, snaps, split.final_fit, split.final_calibration, seed,
                               calibration, cal_mask)
    final_rows = snaps.rows_at(split.final_fit)
    explainer = fit_explainer(final, snaps.X[final_rows], snaps.y[final_rows], seed)
    timings["final_fit"] = _lap(t)
    # What live drift is measured against: the holdout dates' snapshots (the newest labelled
    # population) and the shipped model's scores on them (docs/model.md "Drift and live quality")
    reference = build_reference(snaps.X[hold], FEATURE_NAMES, final.predict_proba(snaps.X[hold])[:, 1],
                                snapshot=f"holdout: {len(split.holdout)} observation dates "
                                         f"{_day(split.holdout[0])}..{_day(split.holdout[-1])}")

    warnings = _warnings(events.n_invalid, events.invalid[:1], holdout, split)
    for w in warnings:
        log(f"warning: {w}")
    report_path = out.with_name(out.name + ".report.json")
    timings["total"] = _lap(started)
    report = TrainReport(
        model_name=chosen, model_version="", out=str(out), report_path=str(report_path),
        events_path=str(events_path), until=until.isoformat(), horizon_days=horizon_days, seed=seed,
        data={"first_event": iso(events.first_ms), "last_event": iso(events.last_ms),
              "lines": events.n_lines, "events": events.n_events, "customers": events.n_customers,
              "invalid_lines": events.n_invalid, "after_until": events.n_after_until,
              "duplicates": events.n_duplicates,
              "invalid_examples": [asdict(x) for x in events.invalid],
              **({"stores": book.describe()} if book is not None else {})},
        snapshots={"observation_dates": len(dates), "step_days": _step_days(dates),
                   "first_observation": iso(dates[0]), "last_observation": iso(dates[-1]),
                   "rows": len(snaps), "customers": len(set(snaps.customers)),
                   "churn_rate": round(float(snaps.y.mean()), 4)},
        splits=_describe_splits(snaps, split), selection=selection,
        calibration=method, holdout=holdout, holdout_active=holdout_active, timings=timings,
        evidence=_evidence(snaps, split, holdout),
        classic_params={n: _params(m) for n, m in classics.items()},
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"), warnings=warnings,
        calibration_table=curves["calibration_table"],
        bgnbd_params=_bgnbd_params(final) or classics["bg_nbd"] and _params(classics["bg_nbd"]),
        explainer_r2=explainer["r2"], reference=reference, ceiling=ceiling,
    )
    report.model_version = save_artifact(out, estimator=final, feature_names=FEATURE_NAMES,
                                         name=chosen, card=_card(report), explainer=explainer)
    t = time.perf_counter()
    report.plots = write_plots(out, curves, chosen)
    timings["plots"] = _lap(t)
    timings["total"] = _lap(started)
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    card_path = out.with_name(out.name + ".card.json")
    card = {"model_version": report.model_version, **_card(report)}
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"saved {report.model_version} to {out}")
    return report


def _ceiling(events_path: Path, truth_path: Path | None, snaps: Snapshots, hold: np.ndarray,
             log: Callable[[str], None]) -> dict[str, Any] | None:
    """The oracle's holdout ROC AUC when the history's true churn times are known."""
    from services.training.ceiling import ceiling, read_truth, truth_path_for

    path = truth_path or truth_path_for(events_path)
    if truth_path is None and not path.is_file():
        return None
    idx = np.flatnonzero(hold)
    out = ceiling(read_truth(path), [snaps.customers[i] for i in idx], snaps.obs_ms[idx],
                  snaps.X[idx], snaps.y[idx], snaps.horizon_days, path)
    if out["roc_auc"] is not None:
        log(f"ceiling: an oracle knowing the true churn times reaches ROC AUC "
            f"{out['roc_auc']:.3f} on the holdout ({path})")
    return out


def _bgnbd_params(model: Any) -> dict[str, float] | None:
    """The BG/NBD population parameters inside a (calibrated) pipeline, for the report."""
    inner = getattr(model, "calibrated_classifiers_", [None])[0]
    est = getattr(inner, "estimator", None)
    est = getattr(est, "estimator", est)  # FrozenEstimator
    steps = getattr(est, "named_steps", {})
    params = getattr(steps.get("bgnbd"), "params_", None)
    return asdict(params) if params is not None else None


def _lap(t: float) -> float:
    return round(time.perf_counter() - t, 3)


def _step_days(dates: list[int]) -> int:
    return round((dates[1] - dates[0]) / DAY_MS) if len(dates) > 1 else 0


def _check_classes(snaps: Snapshots, split: Split, horizon_days: int) -> None:
    if len(snaps) == 0:
        raise TrainingError("no customer has events before the observation dates; supply a longer history")
    rate = float(snaps.y.mean())
    if rate in (0.0, 1.0):
        what = "churned" if rate == 1.0 else "came back"
        raise TrainingError(
            f"only one class: every one of the {len(snaps):,} snapshots {what} within "
            f"{horizon_days} days, so there is nothing to learn; "
            + ("use a longer --horizon-days or check that the history has repeat customers"
               if rate == 1.0 else "use a shorter --horizon-days or a history that includes churn"))
    for name, dates in (("fit", split.fit), ("calibration", split.calibration),
                        ("holdout", split.holdout), ("final calibration", split.final_calibration)):
        y = snaps.y[snaps.rows_at(dates)]
        if len(y) == 0 or y.min() == y.max():
            if len(y) == 0:
                what = "there are none"
            elif len(y) == 1:
                what = "the one snapshot " + ("churned" if y.min() == 1 else "came back")
            else:
                what = (f"all {len(y):,} snapshots" if y.min() == 1
                        else f"none of the {len(y):,} snapshots") + " churned"
            span = _span(_day(dates[0]), _day(dates[-1])) if dates else "-"
            raise TrainingError(
                f"only one class among the {name} snapshots ({_dates(len(dates))}: {span}): "
                f"{what}; a model needs customers who churned and customers who came back "
                "there; supply more customers or a longer history")


def _sample(mask: np.ndarray, seed: int, limit: int = MAX_FIT_ROWS) -> np.ndarray:
    """Row indices of ``mask``, a seeded sample of ``limit`` of them when there are more."""
    idx = np.flatnonzero(mask)
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    return idx


def _select(snaps: Snapshots, split: Split, seed: int, log: Callable[[str], None],
            progress: TextIO | None = None, names: Sequence[str] = tuple(CANDIDATES)
            ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    bar = Progress("model selection", len(names) * len(split.folds), stream=progress)
    for name in names:
        make = MODELS[name]
        folds = []
        t = time.perf_counter()
        for fit_dates, val_dates in split.folds:
            fit, val = snaps.rows_at(fit_dates), snaps.rows_at(val_dates)
            bar.advance()
            if snaps.y[fit].min() == snaps.y[fit].max() or snaps.y[val].min() == snaps.y[val].max():
                continue
            rows = _sample(fit, seed)
            est = make(seed, snaps.horizon_days).fit(snaps.X[rows], snaps.y[rows])
            m = evaluate(snaps.y[val], est.predict_proba(snaps.X[val])[:, 1])
            folds.append({"validate_from": iso(val_dates[0]), "fit_rows": len(rows),
                          "validate_rows": int(val.sum()), "roc_auc": m.roc_auc, "pr_auc": m.pr_auc})
        if not folds:
            raise TrainingError("no cross-validation fold has both classes; supply more customers "
                                "or a longer history")
        out[name] = {
            "roc_auc": round(float(np.mean([f["roc_auc"] for f in folds])), 4),
            "pr_auc": round(float(np.mean([f["pr_auc"] for f in folds])), 4),
            "folds": folds,
            "seconds": _lap(t),
        }
        log(f"{name}: mean ROC AUC {out[name]['roc_auc']:.3f} over {len(folds)} time-ordered folds "
            f"({out[name]['seconds']:.1f} s)")
    bar.close()
    return out


def _choose(selection: dict[str, dict[str, Any]]) -> str:
    best = max(r["roc_auc"] for r in selection.values())
    return next(name for name, r in selection.items() if r["roc_auc"] >= best - TIE_TOLERANCE)


def _ship(best_learned: str | None, on_holdout: dict[str, float | None],
          shippable: Sequence[str]) -> str:
    """The learned model when it beats every classic on the holdout; else the best classic
    (of those that may be shipped). Ties go to the classic: simpler, and it travels."""
    def auc(name: str) -> float:
        value = on_holdout.get(name)
        return -1.0 if value is None else value

    classics = [n for n in CLASSICS if n in on_holdout]
    best_classic = max(classics, key=auc)
    if best_learned is not None and auc(best_learned) > auc(best_classic):
        return best_learned
    allowed = [n for n in classics if n in shippable]
    if allowed:
        return max(allowed, key=auc)
    assert best_learned is not None  # names always holds a model
    return best_learned


def customer_mask(snaps: Snapshots, which: Callable[[str], bool] | None) -> np.ndarray | None:
    """The rows of the customers ``which`` accepts (None: no selection)."""
    if which is None:
        return None
    return np.fromiter((which(c) for c in snaps.customers), dtype=bool,
                       count=len(snaps.customers))


def _fit_calibrated(name: str, snaps: Snapshots, fit_dates: list[int], cal_dates: list[int],
                    seed: int, calibration: Calibration = "sigmoid",
                    cal_mask: np.ndarray | None = None) -> tuple[Any, str]:
    """``name`` fitted on the rows at ``fit_dates`` and calibrated on those at ``cal_dates``
    (and in ``cal_mask``, when given)."""
    rows = _sample(snaps.rows_at(fit_dates), seed)
    at_cal = snaps.rows_at(cal_dates)
    cal = _sample(at_cal if cal_mask is None else at_cal & cal_mask, seed + 1)
    est = MODELS[name](seed, snaps.horizon_days).fit(snaps.X[rows], snaps.y[rows])
    if "clf__n_jobs" in est.get_params():
        est.set_params(clf__n_jobs=1)  # the scorer predicts small batches: threads only cost there
    return _calibrated(est, snaps.X[cal], snaps.y[cal], calibration)


def fit_explainer(model: Any, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """A linear surrogate of ``model`` for cheap per-feature attributions at serving time.

    Ridge regression of the model's log-odds on the standardised arcsinh of the features;
    the reference point is the median retained (y = 0) customer, so an attribution says how
    much a feature pushes this customer's risk above a typical loyal one."""
    from sklearn.linear_model import Ridge

    idx = _sample(np.ones(len(y), dtype=bool), seed, EXPLAIN_ROWS)
    Xs, ys = X[idx], y[idx]
    p = np.clip(model.predict_proba(Xs)[:, 1], 1e-4, 1 - 1e-4)
    target = np.log(p / (1 - p))
    Z = np.arcsinh(Xs)
    center = Z.mean(axis=0)
    scale = Z.std(axis=0)
    scale[scale < 1e-9] = 1.0
    Zs = (Z - center) / scale
    ridge = Ridge(alpha=1.0).fit(Zs, target)
    keep = ys == 0 if (ys == 0).any() else np.ones(len(ys), dtype=bool)
    r2 = float(ridge.score(Zs, target))
    return {"center": center.round(8), "scale": scale.round(8),
            "coef": np.asarray(ridge.coef_).round(8),
            "reference": np.median(Zs[keep], axis=0).round(8), "r2": round(r2, 4)}


BASELINE_LABELS = {"recency": "recency baseline", "bg_nbd": "BG/NBD", "pareto_nbd": "Pareto/NBD",
                   "scorecard": "rule scorecard"}


def _compare(model: Any, X: np.ndarray, y: np.ndarray, classics: dict[str, Any] | None = None, *,
             with_curves: bool = False, seed: int = 0
             ) -> tuple[dict[str, Metrics], dict[str, Any]]:
    """The model beside the baselines on the same rows: recency (raw days), the other fitted
    and calibrated models (``classics``: the classics, and the best learned model when a
    classic was chosen), the rule scorecard; with ``with_curves`` also bootstrap intervals and
    what the plots need."""
    classics = classics or {}
    if len(y) == 0:
        empty = evaluate(y, np.empty(0))
        return ({"model": empty, "recency": empty, "scorecard": empty}
                | {n: empty for n in classics if n != "recency"}), {"calibration_table": []}
    scores = {"model": model.predict_proba(X)[:, 1], "recency": X[:, _RECENCY]}
    scores |= {n: m.predict_proba(X)[:, 1] for n, m in classics.items() if n != "recency"}
    scores["scorecard"] = Scorecard().predict(X)
    metrics = {k: evaluate(y, v, probabilities=k != "recency") for k, v in scores.items()}
    curves: dict[str, Any] = {"calibration_table": []}
    if with_curves:
        metrics = {k: replace(m, roc_auc_ci=bootstrap_auc(y, scores[k], seed=seed))
                   for k, m in metrics.items()}
        curves = {"y": y, "scores": scores,
                  "calibration_table": calibration_table(y, scores["model"])}
    return metrics, curves


def _params(model: Any) -> dict[str, float] | None:
    """The population parameters of a (calibrated) classic, for the report."""
    inner = getattr(model, "calibrated_classifiers_", [None])[0]
    est = getattr(inner, "estimator", None)
    est = getattr(est, "estimator", est)  # FrozenEstimator
    params = getattr(est, "params_", None)
    return asdict(params) if params is not None else None


def _evidence(snaps: Snapshots, split: Split, holdout: dict[str, Metrics]) -> dict[str, Any]:
    """How much the evaluation rests on: dates, rows, churned rows, the AUC interval."""
    hold = snaps.rows_at(split.holdout)
    return {"holdout_dates": len(split.holdout), "holdout_rows": int(hold.sum()),
            "holdout_churned": int(snaps.y[hold].sum()),
            "fit_dates": len(split.fit), "calibration_dates": len(split.calibration),
            "cv_folds": len(split.folds), "purged_folds": split.purged_folds,
            "purge_days": split.purge_days, "horizon_days": split.horizon_days,
            "model_roc_auc_ci": holdout["model"].roc_auc_ci}


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
                      ) -> list[dict[str, Any]]:
    """Predicted vs observed churn in equal-width probability bins (empty bins left out),
    rounded for the report: the table live quality computes too (services/scoring/drift.py)."""
    return [{**row, "predicted": round(row["predicted"], 4), "observed": round(row["observed"], 4)}
            for row in calibration(y.tolist(), p.tolist(), bins)]


def write_plots(out: Path, curves: dict[str, Any], model_name: str) -> dict[str, str]:
    """ROC curves (model and baselines) and the reliability diagram of the holdout, as PNG."""
    if "y" not in curves:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y, scores = curves["y"], curves["scores"]
    paths = {"roc": str(out.with_name(out.name + ".roc.png")),
             "calibration": str(out.with_name(out.name + ".calibration.png"))}
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    for key, label in _labels(model_name, scores).items():
        fpr, tpr, _ = roc_curve(y, scores[key])
        auc = roc_auc_score(y, scores[key])
        ax.plot(fpr, tpr, label=f"{label}  AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, holdout")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["roc"], metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    table = curves["calibration_table"]
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.plot([r["predicted"] for r in table], [r["observed"] for r in table], marker="o",
            label=f"model ({model_name})")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate",
           title="Calibration, holdout", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["calibration"], metadata={"Software": None})
    plt.close(fig)
    return paths


def _describe_splits(snaps: Snapshots, split: Split) -> dict[str, dict[str, Any]]:
    out = {}
    for name, dates in (("fit", split.fit), ("calibration", split.calibration),
                        ("holdout", split.holdout), ("final_fit", split.final_fit),
                        ("final_calibration", split.final_calibration)):
        y = snaps.y[snaps.rows_at(dates)]
        out[name] = {"dates": len(dates), "first": iso(dates[0]), "last": iso(dates[-1]),
                     "rows": len(y), "churn_rate": round(float(y.mean()), 4) if len(y) else None}
    return out


def _warnings(n_invalid: int, first_invalid: list[Any], holdout: dict[str, Metrics],
              split: Split) -> list[str]:
    out = []
    if n_invalid:
        first = first_invalid[0]
        out.append(f"{n_invalid} invalid lines skipped (first: line {first.line}: {first.message})")
    if holdout["model"].churned < MIN_HOLDOUT_POSITIVES:
        out.append(f"the holdout has only {holdout['model'].churned} churned snapshots; its metrics "
                   "are noisy — supply more customers or a longer history")
    m, r = holdout["model"].roc_auc, holdout["recency"].roc_auc
    if m is not None and r is not None and m < r:
        out.append(f"the model does not beat recency alone on the holdout (ROC AUC {m:.3f} vs "
                   f"{r:.3f}); check the history before serving it")
    if not split.purged_folds:
        out.append("the history is too short for purged cross-validation: model-selection folds "
                   "overlap label windows (the holdout is still fully out of time)")
    if not split.full_purge:
        out.append(f"short history: the labels of the fit and calibration dates end "
                   f"{split.purge_days} days before the holdout, not a full {split.horizon_days}-"
                   "day horizon, so the holdout overlaps their label windows and its numbers "
                   "are somewhat optimistic; a longer history removes this")
    return out


def _card(report: TrainReport) -> dict[str, Any]:
    return {
        "trained_at": report.trained_at,
        "model": report.model_name,
        "calibration": report.calibration,
        "label": f"no event of the customer within {report.horizon_days} days after the "
                 "observation date",
        "horizon_days": report.horizon_days,
        "until": report.until,
        "events_file": Path(report.events_path).name,
        "data_range": [report.data["first_event"], report.data["last_event"]],
        "customers": report.data["customers"],
        "events": report.data["events"],
        "snapshots": report.snapshots["rows"],
        "observation_dates": report.snapshots["observation_dates"],
        "features": list(FEATURE_NAMES),
        "feature_schema": FEATURE_SCHEMA_VERSION,
        "selection": {k: v["roc_auc"] for k, v in report.selection.items()},
        "holdout": {k: asdict(v) for k, v in report.holdout.items()},
        "holdout_active": {k: asdict(v) for k, v in report.holdout_active.items()},
        "calibration_table": report.calibration_table,
        "bgnbd_params": report.bgnbd_params,
        "classic_params": report.classic_params,
        "evidence": report.evidence,
        "ceiling": report.ceiling,
        "explainer_r2": report.explainer_r2,
        "training_seconds": report.timings["total"],
        "seed": report.seed,
        "sklearn_version": sklearn.__version__,
        "reference": report.reference,
    }
