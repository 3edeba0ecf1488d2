"""The ceiling of a synthetic history: how well an oracle that knows the truth ranks the holdout.

``churnwatch generate`` writes, beside the events, each customer's true first churn time,
personal cadence and the preset's gap regularity (``<events>.truth.ndjson``). Even knowing
them, the label ("no event within the horizon") is not fully predictable: a living customer
with a long cadence may simply not be due within the horizon, and one who churns inside the
horizon may or may not come once more first. The **oracle score** of a snapshot (customer,
date d, days since the last activity r, horizon h) is the probability of that silence under
the generator's own process:

- churned at or before d and silent since: 1 (gone);
- alive at d (or back after churning): the next occasion comes a gap G after the last one, G ~ cadence · Gamma(k, 1/k)
  with the preset's shape k; the customer is silent over the horizon (or, churning (again)
  at c inside it, until c) with probability S(r + w) / S(r), S the survival of G and w = h (or
  c - d).

Its ROC AUC on the holdout is the **ceiling** the report shows beside the models: a target
like "AUC ≥ 0.85" means something only where the ceiling is above it. This oracle knows the
churns to come as well (a customer churning inside the horizon), which no model can; the
report also gives ``roc_auc_known_at_date``, the same oracle knowing only who has churned by
each date — closer to what the data allow at best. Both ignore seasons and holidays: they
are estimates, not proofs.
"""

from __future__ import annotations

import json
from bisect import bisect_right
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
    churn_ms: int | None          # the first churn
    cadence_days: float
    gap_shape: float
    churns_ms: tuple[int, ...] = ()  # every churn (a customer may come back and churn again)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


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
                    churn_ms = _ms(churn) if churn else None
                    churns = tuple(sorted(_ms(c) for c in row.get("churns") or []))
                    if not churns and churn_ms is not None:  # an older truth file
                        churns = (churn_ms,)
                    out[str(row["customer_id"])] = Truth(
                        churn_ms, float(row["cadence_days"]), float(row.get("gap_shape", 1.0)),
                        churns)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise TrainingError(f"{path}:{lineno}: not a truth record of `churnwatch "
                                        f"generate` ({exc})") from None
    except OSError as exc:
        raise TrainingError(f"cannot read truth file {path}: {exc}") from exc
    return out


def oracle_scores(truth: dict[str, Truth], customers: list[str], obs_ms: np.ndarray,
                  X: np.ndarray, horizon_days: int, *, future: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's P(silent over the horizon) per row, and which rows have a truth record.
    ``future=False``: the oracle knows only the churns up to each date, not the ones to come."""
    n = len(customers)
    known = np.array([c in truth for c in customers], dtype=bool)
    cadence = np.array([truth[c].cadence_days if k else 1.0
                        for c, k in zip(customers, known, strict=True)])
    shape = np.array([truth[c].gap_shape if k else 1.0
                      for c, k in zip(customers, known, strict=True)])
    r = np.maximum(X[:, _RECENCY].astype(float), 0.0)
    gone = np.zeros(n, dtype=bool)
    until_churn = np.full(n, np.inf)  # days from d to the next churn
    for i, (cid, d, rec) in enumerate(zip(customers, obs_ms.tolist(), r.tolist(), strict=True)):
        t = truth.get(cid)
        if t is None or not t.churns_ms:
            continue
        j = bisect_right(t.churns_ms, d)
        # gone: churned at or before d and silent since (activity after a churn is a return)
        if j and d - rec * DAY_MS <= t.churns_ms[j - 1]:
            gone[i] = True
        elif future and j < len(t.churns_ms):
            until_churn[i] = (t.churns_ms[j] - d) / DAY_MS
    w = np.maximum(np.minimum(float(horizon_days), until_churn), 0.0)
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
    now, _ = oracle_scores(truth, customers, obs_ms, X, horizon_days, future=False)
    return {"roc_auc": m.roc_auc, "roc_auc_ci": bootstrap_auc(y[known], score[known]),
            "pr_auc": m.pr_auc,
            # the oracle that knows only who has churned by each date (not who will)
            "roc_auc_known_at_date": evaluate(y[known], now[known]).roc_auc,
            "rows": int(known.sum()), "rows_without_truth": int((~known).sum()),
            "truth": str(path),
            "method": "oracle P(silent over the horizon) from the true churn time, cadence and "
                      "gap shape (services/training/ceiling.py)"}
