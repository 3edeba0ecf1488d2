"""The ceiling of a synthetic history: how well an oracle that knows the truth ranks the holdout.

``churnwatch generate`` writes, beside the events, each customer's true first churn time,
personal cadence and the preset's gap regularity (``<events>.truth.ndjson``). Even knowing
them, the label ("no event within the horizon") is not fully predictable: a living customer
with a long cadence may simply not be due within the horizon, and one who churns inside the
horizon may or may not come once more first. The **oracle score** of a snapshot (customer,
date d, days since the last activity r, horizon h) is the probability of that silence under
the generator's own process:

- churned at or before d: 1 (gone);
- alive at d: the next occasion comes a gap G after the last one, G ~ cadence · Gamma(k, 1/k)
  with the preset's shape k; the customer is silent over the horizon (or, churning at c
  inside it, until c) with probability S(r + w) / S(r), S the survival of G and w = h (or
  c - d).

Its ROC AUC on the holdout is the **ceiling** the report shows beside the models: a target
like "AUC ≥ 0.85" means something only where the ceiling is above it. It is an estimate
(the oracle ignores seasons, holidays and returns after churning), so a model can land a
little above it, never far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import gamma

from services.scoring.features import DAY_MS, FEATURE_NAMES
from services.training.exceptions import TrainingError

_RECENCY = FEATURE_NAMES.index("days_since_last_activity")


@dataclass(frozen=True)
class Truth:
    churn_ms: int | None
    cadence_days: float
    gap_shape: float


def truth_path_for(events_path: Path) -> Path:
    """Where ``churnwatch generate`` writes the truth by default: ``<events>.truth.ndjson``."""
    return events_path.with_name(events_path.name + ".truth.ndjson")


def read_truth(path: Path) -> dict[str, Truth]:
    out: dict[str, Truth] = {}
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    churn = row.get("churn_at")
                    churn_ms = (int(datetime.fromisoformat(churn.replace("Z", "+00:00"))
                                    .timestamp() * 1000) if churn else None)
                    out[str(row["customer_id"])] = Truth(
                        churn_ms, float(row["cadence_days"]), float(row.get("gap_shape", 1.0)))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise TrainingError(f"{path}:{lineno}: not a truth record of `churnwatch "
                                        f"generate` ({exc})") from None
    except OSError as exc:
        raise TrainingError(f"cannot read truth file {path}: {exc}") from exc
    return out


def oracle_scores(truth: dict[str, Truth], customers: list[str], obs_ms: np.ndarray,
                  X: np.ndarray, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's P(silent over the horizon) per row, and which rows have a truth record."""
    n = len(customers)
    known = np.array([c in truth for c in customers], dtype=bool)
    churn = np.array([np.nan if (t := truth.get(c)) is None or t.churn_ms is None
                      else t.churn_ms for c in customers], dtype=float)
    cadence = np.array([truth[c].cadence_days if k else 1.0
                        for c, k in zip(customers, known, strict=True)])
    shape = np.array([truth[c].gap_shape if k else 1.0
                      for c, k in zip(customers, known, strict=True)])
    d = obs_ms.astype(float)
    r = np.maximum(X[:, _RECENCY].astype(float), 0.0)
    gone = ~np.isnan(churn) & (churn <= d)
    until_churn = np.where(np.isnan(churn), np.inf, (churn - d) / DAY_MS)
    w = np.minimum(float(horizon_days), until_churn)
    w = np.maximum(w, 0.0)
    scale = cadence / shape
    with np.errstate(invalid="ignore", over="ignore"):
        log_silent = (gamma.logsf(r + w, shape, scale=scale) - gamma.logsf(r, shape, scale=scale))
        silent = np.exp(np.nan_to_num(log_silent, nan=0.0, neginf=-np.inf))
    score = np.where(gone, 1.0, np.clip(silent, 0.0, 1.0))
    return (score if n else np.empty(0)), known


def ceiling(truth: dict[str, Truth], customers: list[str], obs_ms: np.ndarray, X: np.ndarray,
            y: np.ndarray, horizon_days: int, path: Path) -> dict[str, Any]:
    """The oracle's ROC AUC on these rows (those with a truth record), for the report."""
    from services.training.train import bootstrap_auc, evaluate

    score, known = oracle_scores(truth, customers, obs_ms, X, horizon_days)
    m = evaluate(y[known], score[known])
    return {"roc_auc": m.roc_auc, "roc_auc_ci": bootstrap_auc(y[known], score[known]),
            "pr_auc": m.pr_auc, "rows": int(known.sum()), "rows_without_truth": int((~known).sum()),
            "truth": str(path),
            "method": "oracle P(silent over the horizon) from the true churn time, cadence and "
                      "gap shape (services/training/ceiling.py)"}
