"""BG/NBD (Fader, Hardie & Lee 2005): the statistical churn model of non-contractual business.

Each customer "buys" (has an active day) as a Poisson process with rate lambda ~ Gamma(r,
alpha) and, after every purchase, drops out with probability p ~ Beta(a, b). From a customer's
own activity — repeat active days ``x``, the time of the last one ``t_x`` and the observed span
``T`` (all in days, see the ``bgnbd_*`` features of :mod:`services.scoring.features`) — it gives

- ``P(alive)``, and
- ``P(no active day within the next h days)`` — exactly churnwatch's label.

The four population parameters are fitted by maximum likelihood at training time and stored
in the model artifact (inside :class:`BGNBDFeatures`), so serving computes the same numbers
from the same features: the streaming scorer and ``churnwatch train`` cannot disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln
from sklearn.base import BaseEstimator, TransformerMixin

from services.scoring.features import FEATURE_NAMES

logger = logging.getLogger(__name__)
X_COL = FEATURE_NAMES.index("bgnbd_x")
TX_COL = FEATURE_NAMES.index("bgnbd_t_x")
T_COL = FEATURE_NAMES.index("bgnbd_T")
MAX_FIT_ROWS = 40_000
EXTRA_NAMES = ("bgnbd_p_alive", "bgnbd_p_silent_horizon", "bgnbd_expected_rate")


@dataclass(frozen=True)
class Params:
    r: float
    alpha: float
    a: float
    b: float


# Weakly informative defaults (days): a customer active every ~30 days, 1 in ~4 repeat visits
# risks being the last. Used when the data cannot support a fit.
DEFAULT_PARAMS = Params(r=0.8, alpha=25.0, a=0.6, b=2.5)


def log_likelihood(p: Params, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of (x, t_x, T) under BG/NBD."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a3 = np.where(x > 0, betaln(a + 1, np.maximum(b + x - 1, 1e-9)) - betaln(a, b)
                      - (r + x) * np.log(alpha + t_x), -np.inf)
    return np.asarray(a1 + np.logaddexp(a2, a3))


def fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Params:
    """Maximum-likelihood population parameters (falls back to :data:`DEFAULT_PARAMS`)."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    ok = (T > 0) & (t_x <= T) & (x >= 0)
    x, t_x, T = x[ok], t_x[ok], T[ok]
    if len(x) < 50 or x.sum() == 0:
        return DEFAULT_PARAMS

    def nll(theta: np.ndarray) -> float:
        r, alpha, a, b = np.exp(np.clip(theta, -8, 8))
        ll = log_likelihood(Params(r, alpha, a, b), x, t_x, T)
        return float(-np.mean(ll))

    d = DEFAULT_PARAMS
    start = np.log([d.r, d.alpha, d.a, d.b])
    res = minimize(nll, start, method="Nelder-Mead",
                   options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-7})
    if not np.isfinite(res.fun):
        logger.warning("BG/NBD fit failed (%s); using default parameters", res.message)
        return DEFAULT_PARAMS
    r, alpha, a, b = (float(v) for v in np.exp(np.clip(res.x, -8, 8)))
    return Params(round(r, 6), round(alpha, 6), round(a, 6), round(b, 6))


_FIT_CACHE: dict[bytes, Params] = {}
_FIT_CACHE_SIZE = 64


def fit_cached(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Params:
    """:func:`fit`, remembered by the bytes of its input: every candidate of a fold (and the
    BG/NBD classic) fits the same rows, and the maximum likelihood of the same rows is the
    same parameters — fitting them once per fold instead of once per model saves most of the
    BG/NBD time of ``churnwatch train``."""
    digest = blake2b(digest_size=16)
    for v in (x, t_x, T):
        a = np.ascontiguousarray(v, dtype=float)
        digest.update(len(a).to_bytes(8, "little"))
        digest.update(a.tobytes())
    key = digest.digest()
    params = _FIT_CACHE.get(key)
    if params is None:
        params = fit(x, t_x, T)
        if len(_FIT_CACHE) >= _FIT_CACHE_SIZE:
            _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
        _FIT_CACHE[key] = params
    return params


def p_alive(p: Params, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(the customer has not dropped out) given their own (x, t_x, T)."""
    with np.errstate(over="ignore", divide="ignore"):
        ratio = np.exp((p.r + x) * (np.log(p.alpha + T) - np.log(p.alpha + t_x)))
        odds = np.where(x > 0, p.a / np.maximum(p.b + x - 1, 1e-9) * ratio, 0.0)
    return np.asarray(1.0 / (1.0 + odds))


def p_silent(p: Params, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float
             ) -> np.ndarray:
    """P(no active day within ``horizon`` days after T): dropped out, or alive and quiet."""
    alive = p_alive(p, x, t_x, T)
    quiet = np.exp((p.r + x) * (np.log(p.alpha + T) - np.log(p.alpha + T + horizon)))
    return np.asarray((1.0 - alive) + alive * quiet)


class BGNBDFeatures(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Appends BG/NBD's P(alive), P(silent over the horizon) and posterior rate to the rows
    (columns in :data:`FEATURE_NAMES` order); fits the population parameters in ``fit``."""

    def __init__(self, horizon_days: float = 60.0):
        self.horizon_days = horizon_days

    def fit(self, X: np.ndarray, y: Any = None) -> BGNBDFeatures:
        X = np.asarray(X, dtype=float)
        if len(X) > MAX_FIT_ROWS:  # deterministic thinning: every k-th row
            X = X[:: int(np.ceil(len(X) / MAX_FIT_ROWS))]
        self.params_ = fit_cached(X[:, X_COL], X[:, TX_COL], X[:, T_COL])
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        x, t_x, T = X[:, X_COL], X[:, TX_COL], X[:, T_COL]
        p = self.params_
        alive = p_alive(p, x, t_x, T)
        silent = p_silent(p, x, t_x, T, self.horizon_days)
        rate = (p.r + x) / (p.alpha + T)  # posterior mean purchase rate (per day) if alive
        return np.column_stack([X, alive, silent, rate])
