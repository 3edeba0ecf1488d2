"""The classic churn models, as estimators ``churnwatch train`` can evaluate and ship.

- :class:`RecencyModel` — days since the last activity, nothing else: the bar every model must
  clear.
- :class:`BGNBDModel` — BG/NBD (Fader, Hardie & Lee 2005), see :mod:`.bgnbd`.
- :class:`ParetoNBDModel` — Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases are
  Poisson with rate lambda ~ Gamma(r, alpha); the lifetime is exponential with rate
  mu ~ Gamma(s, beta), independent of purchases. The likelihood and P(alive) follow Fader,
  Hardie & Lee, "A Note on Deriving the Pareto/NBD Model and Related Expressions" (2005).

Each one reads the same feature rows the scorer computes (:data:`FEATURE_NAMES`: ``bgnbd_x``
repeat active days, ``bgnbd_t_x`` day of the last one, ``bgnbd_T`` days observed) and answers
``predict_proba`` like a scikit-learn classifier, so calibration, evaluation, the artifact and
serving treat them exactly like the learned models. Their score is the probability of no
activity within the horizon; the trainer calibrates it on later dates like any other model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1, logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin

from services.scoring.features import FEATURE_NAMES
from services.training import bgnbd

logger = logging.getLogger(__name__)
RECENCY_COL = FEATURE_NAMES.index("days_since_last_activity")
MAX_FIT_ROWS = 1000  # hyp2f1 is ~5-10 us a call: population parameters need no more rows


def _proba(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.nan_to_num(np.asarray(p, dtype=float), nan=0.5), 0.0, 1.0)
    return np.column_stack([1.0 - p, p])


def _sample(X: np.ndarray, limit: int) -> np.ndarray:
    """A seeded random sample of ``limit`` rows (every k-th row would keep the row order's
    bias: rows come grouped by customer and date)."""
    if len(X) <= limit:
        return X
    return X[np.sort(np.random.default_rng(0).choice(len(X), limit, replace=False))]


def _thin(X: np.ndarray, limit: int) -> np.ndarray:
    """Deterministic thinning (every k-th row): fits stay fast and reproducible."""
    return X[:: int(np.ceil(len(X) / limit))] if len(X) > limit else X


class _Classic(BaseEstimator, ClassifierMixin):  # type: ignore[misc]
    classes_ = np.array([0, 1])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(X)[:, 1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


class RecencyModel(_Classic):
    """P(churn) grows with the days since the last activity, nothing else. Its decision is
    ``ln(1 + days) - ln(1 + scale)``, the scale being the median recency of the fitted rows:
    unbounded, so the trainer's sigmoid calibration fits ``P = 1 / (1 + exp(-(a ln(1 + days)
    + b)))``, and a long absence can reach a probability near 1.

    Models fitted before it (no ``shape_``) scored ``1 - exp(-days / scale)`` and keep it: on
    a business whose customers come every few days that is ~1 for every absence past two
    weeks, so the calibrated score stopped rising there (a student away for five months
    scored as one away for a month, medium at most)."""

    def fit(self, X: np.ndarray, y: Any = None) -> RecencyModel:
        days = np.asarray(X, dtype=float)[:, RECENCY_COL]
        self.scale_ = float(max(np.median(days), 1.0))
        self.shape_ = "log"
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        days = np.maximum(np.asarray(X, dtype=float)[:, RECENCY_COL], 0.0)
        if getattr(self, "shape_", None) == "log":
            return np.log1p(days) - math.log1p(self.scale_)
        return 1.0 - np.exp(-days / self.scale_)  # a model fitted before the log shape

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        if getattr(self, "shape_", None) == "log":
            return _proba(1.0 / (1.0 + np.exp(-z)))
        return _proba(z)


class BGNBDModel(_Classic):
    """BG/NBD's P(no active day within the horizon)."""

    def __init__(self, horizon_days: float = 60.0):
        self.horizon_days = horizon_days

    def fit(self, X: np.ndarray, y: Any = None) -> BGNBDModel:
        X = _thin(np.asarray(X, dtype=float), bgnbd.MAX_FIT_ROWS)
        self.params_ = bgnbd.fit_cached(X[:, bgnbd.X_COL], X[:, bgnbd.TX_COL], X[:, bgnbd.T_COL])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return _proba(bgnbd.p_silent(self.params_, X[:, bgnbd.X_COL], X[:, bgnbd.TX_COL],
                                     X[:, bgnbd.T_COL], self.horizon_days))


@dataclass(frozen=True)
class ParetoParams:
    r: float
    alpha: float
    s: float
    beta: float


# Weakly informative defaults (days): a purchase every ~30 days, a lifetime of ~1-2 years.
PARETO_DEFAULT = ParetoParams(r=0.8, alpha=25.0, s=0.8, beta=300.0)


def _log_a0(p: ParetoParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """log A0 of the Pareto/NBD likelihood (Fader, Hardie & Lee 2005, eq. 19-20), computed
    with the larger of alpha and beta so that the hypergeometric argument lies in [0, 1)."""
    rsx = p.r + p.s + x
    b_arg: Any
    if p.alpha >= p.beta:
        hi, b_arg = p.alpha, p.s + 1.0
    else:
        hi, b_arg = p.beta, p.r + x
    diff = abs(p.alpha - p.beta)
    q1, q2 = hi + t_x, hi + T
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = hyp2f1(rsx, b_arg, rsx + 1.0, diff / q1)
        f2 = hyp2f1(rsx, b_arg, rsx + 1.0, diff / q2)
        # log(f1 / q1^rsx - f2 / q2^rsx), the first term being the larger
        out = logsumexp(np.stack([np.log(f1) - rsx * np.log(q1), np.log(f2) - rsx * np.log(q2)]),
                        axis=0, b=np.stack([np.ones_like(x), -np.ones_like(x)]))
    return np.asarray(out)


def pareto_log_likelihood(p: ParetoParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
                          ) -> np.ndarray:
    a1 = gammaln(p.r + x) - gammaln(p.r) + p.r * np.log(p.alpha) + p.s * np.log(p.beta)
    stay = -(p.r + x) * np.log(p.alpha + T) - p.s * np.log(p.beta + T)
    # t_x close to T: A0's two terms cancel, and rounding can leave log of a tiny negative
    gone = np.nan_to_num(np.log(p.s) - np.log(p.r + p.s + x) + _log_a0(p, x, t_x, T),
                         nan=-np.inf)
    return np.asarray(a1 + np.logaddexp(stay, gone))


def pareto_fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> ParetoParams:
    """Maximum-likelihood population parameters (the defaults when the data cannot support
    a fit)."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    ok = (T > 0) & (t_x <= T) & (x >= 0)
    x, t_x, T = x[ok], t_x[ok], T[ok]
    if len(x) < 50 or x.sum() == 0:
        return PARETO_DEFAULT

    # Customers with the same (x, t_x, T) share a likelihood: evaluate each once, weighted.
    rows, weight = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
    x, t_x, T = rows[:, 0], rows[:, 1], rows[:, 2]

    def nll(theta: np.ndarray) -> float:
        r, alpha, s, beta = np.exp(np.clip(theta, -8, 9))
        with np.errstate(over="ignore"):  # a wild trial point: an infinite value, refused below
            ll = pareto_log_likelihood(ParetoParams(r, alpha, s, beta), x, t_x, T)
            value = float(-np.average(ll, weights=weight))
        return value if np.isfinite(value) else 1e12

    d = PARETO_DEFAULT
    start = bgnbd.fit(x, t_x, T)  # the same Gamma purchase rate: a good place to start
    res = minimize(nll, np.log([start.r, start.alpha, d.s, d.beta]), method="Nelder-Mead",
                   options={"maxiter": 400, "xatol": 1e-3, "fatol": 1e-6})
    if not np.isfinite(res.fun) or res.fun >= 1e12:
        logger.warning("Pareto/NBD fit failed (%s); using default parameters", res.message)
        return PARETO_DEFAULT
    r, alpha, s, beta = (float(v) for v in np.exp(np.clip(res.x, -8, 9)))
    return ParetoParams(round(r, 6), round(alpha, 6), round(s, 6), round(beta, 6))


def pareto_p_alive(p: ParetoParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(the customer's lifetime has not ended by T) given their (x, t_x, T)."""
    log_odds = (np.log(p.s) - np.log(p.r + p.s + x) + (p.r + x) * np.log(p.alpha + T)
                + p.s * np.log(p.beta + T) + _log_a0(p, x, t_x, T))
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(np.nan_to_num(log_odds, nan=0.0, posinf=700.0))))


def pareto_p_silent(p: ParetoParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
                    horizon: float) -> np.ndarray:
    """P(no purchase within ``horizon`` days after T): the lifetime ended, or it goes on and the
    Gamma-Poisson purchase process stays quiet (ending within the horizon is not credited:
    a small understatement that leaves the order of customers as good as intact)."""
    alive = pareto_p_alive(p, x, t_x, T)
    quiet = np.exp((p.r + x) * (np.log(p.alpha + T) - np.log(p.alpha + T + horizon)))
    return np.asarray((1.0 - alive) + alive * quiet)


class ParetoNBDModel(_Classic):
    """Pareto/NBD's P(no purchase within the horizon)."""

    def __init__(self, horizon_days: float = 60.0):
        self.horizon_days = horizon_days

    def fit(self, X: np.ndarray, y: Any = None) -> ParetoNBDModel:
        X = _sample(np.asarray(X, dtype=float), MAX_FIT_ROWS)
        self.params_ = pareto_fit(X[:, bgnbd.X_COL], X[:, bgnbd.TX_COL], X[:, bgnbd.T_COL])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return _proba(pareto_p_silent(self.params_, X[:, bgnbd.X_COL], X[:, bgnbd.TX_COL],
                                      X[:, bgnbd.T_COL], self.horizon_days))
