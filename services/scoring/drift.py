"""Drift and live quality of a model: pure functions (numpy), no I/O.

- :func:`build_reference`: what ``churnwatch train`` stores in the model card
  (``card["reference"]``): per feature and for the score, the decile bin edges of the
  training snapshot and the share of its rows in each bin;
- :func:`bin_codes` puts a live customer's features and score in those bins (one character
  per feature, so a sample is ~40 bytes in Redis), :func:`psi` compares the bin shares of live
  samples with the reference (population stability index);
- :func:`roc_auc`, :func:`calibration`, :func:`brier`, :func:`precision` judge labelled live
  predictions (label 1: the customer did not come back within the horizon, as in training);
  :func:`auc_difference` compares two scores of the same predictions (the model against days
  since the last activity alone) with the standard error of the difference.

The live scorer side (sampling, labelling, metrics) is ``services/scorer/quality.py``;
docs/model.md ("Drift and live quality") says what the numbers mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.scoring.features import WINDOWS

REFERENCE_VERSION = 1
QUANTILES = tuple(i / 10 for i in range(1, 10))  # deciles: at most 10 bins
MAX_BINS = len(QUANTILES) + 1
# Training snapshots leave out customers silent for longer than this (services/training/
# dataset.py MAX_DORMANT_DAYS); live samples do too, so both describe the same population.
MAX_DORMANT_DAYS = max(WINDOWS)
PSI_FLOOR = 1e-4  # a bin share of 0 counts as this (PSI is undefined at 0)
CALIBRATION_BINS = 10
SCORE = "score"


def edges_of(values: np.ndarray) -> list[float]:
    """The distinct decile cut points of ``values`` (fewer than 9 when values tie: a binary
    feature gets one or two)."""
    if len(values) == 0:
        return []
    cuts = np.quantile(np.asarray(values, dtype=float), QUANTILES)
    return [float(x) for x in np.unique(np.round(cuts, 6))]


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value: the number of edges at or below it (0..len(edges))."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float),
                           side="right")


def proportions(index: np.ndarray, n_bins: int) -> list[float]:
    counts = np.bincount(np.asarray(index, dtype=int), minlength=n_bins)[:n_bins]
    total = max(int(counts.sum()), 1)
    return [round(float(c) / total, 6) for c in counts]


def _one(values: np.ndarray) -> dict[str, Any]:
    edges = edges_of(values)
    return {"edges": edges, "proportions": proportions(bin_index(values, edges), len(edges) + 1)}


def build_reference(X: np.ndarray, feature_names: Sequence[str], scores: np.ndarray, *,
                    snapshot: str) -> dict[str, Any]:
    """The reference distributions of a training snapshot (``X``: rows of features in
    ``feature_names`` order, ``scores``: the shipped model's probabilities on them) for the
    model card. ``snapshot`` says which rows they are (for people reading the card)."""
    X = np.asarray(X, dtype=float)
    keep = X[:, list(feature_names).index("days_since_last_activity")] <= MAX_DORMANT_DAYS \
        if "days_since_last_activity" in feature_names else np.ones(len(X), dtype=bool)
    X, scores = X[keep], np.asarray(scores, dtype=float)[keep]
    return {"version": REFERENCE_VERSION, "snapshot": snapshot, "rows": len(X),
            "features": {name: _one(X[:, i]) for i, name in enumerate(feature_names)},
            "score": _one(scores)}


def usable(reference: Any) -> bool:
    """Whether a card's ``reference`` is one this version reads (older models have none)."""
    return isinstance(reference, dict) and reference.get("version") == REFERENCE_VERSION \
        and isinstance(reference.get("features"), dict) and isinstance(reference.get("score"), dict)


def bin_codes(reference: dict[str, Any], features: dict[str, float], score: float) -> str:
    """A sample's bins as a string: one digit per reference feature (in the reference's
    order), then the score's; ``-`` for a feature the sample lacks."""
    out = []
    for name, ref in reference["features"].items():
        value = features.get(name)
        out.append("-" if value is None else str(int(bin_index(np.array([value]), ref["edges"])[0])))
    out.append(str(int(bin_index(np.array([score]), reference["score"]["edges"])[0])))
    return "".join(out)


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index Σ (a − e)·ln(a / e) over bins (shares floored at
    ``floor``). Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift."""
    e = np.maximum(np.asarray(expected, dtype=float), floor)
    a = np.maximum(np.asarray(actual, dtype=float), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_from_codes(reference: dict[str, Any], codes: Sequence[str]) -> dict[str, float]:
    """PSI of each feature and of the score (key :data:`SCORE`) of live samples' bin codes
    (:func:`bin_codes`) against the reference; a feature without live values is left out."""
    names = [*reference["features"], SCORE]
    refs = [*reference["features"].values(), reference["score"]]
    width = len(names)
    rows = [c for c in codes if len(c) == width]
    out: dict[str, float] = {}
    for i, (name, ref) in enumerate(zip(names, refs, strict=True)):
        n_bins = len(ref["proportions"])
        index = [int(c[i]) for c in rows if c[i] != "-" and int(c[i]) < n_bins]
        if index:
            out[name] = round(psi(ref["proportions"], proportions(np.array(index), n_bins)), 6)
    return out


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_v)) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y: Sequence[int], score: Sequence[float]) -> float | None:
    """ROC AUC (ties count half: the Mann-Whitney statistic); None without both classes."""
    y_arr = np.asarray(y, dtype=int)
    s = np.asarray(score, dtype=float)
    pos, neg = int(y_arr.sum()), int(len(y_arr) - y_arr.sum())
    if pos == 0 or neg == 0:
        return None
    u = midranks(s)[y_arr == 1].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def auc_difference(y: Sequence[int], a: Sequence[float], b: Sequence[float]
                   ) -> tuple[float, float] | None:
    """ROC AUC of ``a`` minus that of ``b`` on the same labelled rows, and the standard error
    of that difference (DeLong, DeLong & Clarke-Pearson 1988, in the midrank form of Sun & Xu
    2014), which counts that both are judged on the same customers: the more the two scores
    agree, the better the difference is known. None without two of each class."""
    y_arr = np.asarray(y, dtype=int)
    pos_mask = y_arr == 1
    m, n = int(pos_mask.sum()), int((~pos_mask).sum())
    if m < 2 or n < 2:
        return None
    aucs, v10, v01 = [], [], []
    for score in (a, b):
        s = np.asarray(score, dtype=float)
        x, z = s[pos_mask], s[~pos_mask]
        tz = midranks(np.concatenate([x, z]))
        tx, ty = midranks(x), midranks(z)
        aucs.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v10.append((tz[:m] - tx) / n)  # per churned customer: share of the others ranked below
        v01.append(1.0 - (tz[m:] - ty) / m)  # per retained one: share of churned above
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    var = ((s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m
           + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n)
    return float(aucs[0] - aucs[1]), float(math.sqrt(max(var, 0.0)))


def brier(y: Sequence[int], score: Sequence[float]) -> float | None:
    if len(y) == 0:
        return None
    return float(np.mean((np.asarray(score, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def calibration(y: Sequence[int], score: Sequence[float], bins: int = CALIBRATION_BINS
                ) -> list[dict[str, Any]]:
    """Mean predicted probability vs observed churn rate in equal-width score bins (as the
    training report's calibration table; empty bins left out)."""
    y_arr = np.asarray(y, dtype=float)
    p = np.asarray(score, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": int(m.sum()),
                        "predicted": float(p[m].mean()), "observed": float(y_arr[m].mean())})
    return out


def calibration_error(table: Sequence[dict[str, Any]]) -> float | None:
    """Expected calibration error: |predicted − observed| of each bin, weighted by its rows."""
    rows = sum(r["rows"] for r in table)
    if rows == 0:
        return None
    return float(sum(r["rows"] * abs(r["predicted"] - r["observed"]) for r in table) / rows)


def precision(y: Sequence[int], flagged: Sequence[bool]) -> float | None:
    """Share of flagged predictions (e.g. the high tier) whose customer churned."""
    f = np.asarray(flagged, dtype=bool)
    if not f.any():
        return None
    return float(np.asarray(y, dtype=float)[f].mean())


def label(as_of_ms: int, last_ts: int | None, horizon_ms: int,
          active_between: Any = None) -> int:
    """1 (churned) when the customer had no activity in ``(as_of, as_of + horizon]``, else 0.

    ``last_ts``: their newest activity now. After the prediction and within the horizon:
    retained; at or before the prediction: churned (nothing since). Beyond the horizon the
    newest activity says nothing about the window: ``active_between(start, end)`` (the
    customer's summary) answers, else the customer counts as retained — they did come back,
    only later than the horizon; :mod:`services.scorer.quality` labels each sample in the
    first pass after its horizon, so this is rare."""
    if last_ts is None or last_ts <= as_of_ms:
        return 1
    if last_ts <= as_of_ms + horizon_ms:
        return 0
    if active_between is not None:
        return 0 if active_between(as_of_ms, as_of_ms + horizon_ms) else 1
    return 0


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


__all__ = ["MAX_DORMANT_DAYS", "SCORE", "auc_difference", "bin_codes", "brier", "build_reference",
           "calibration", "calibration_error", "label", "midranks", "precision", "psi",
           "psi_from_codes", "roc_auc", "usable"]
