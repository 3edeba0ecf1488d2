"""Risk models the scorer can serve: the rule scorecard, or an artifact from ``churnwatch train``.

An artifact is a joblib file holding a dict::

    {"format": "churnwatch-model", "format_version": 1, "version": "<name>-<content hash>",
     "feature_names": [...], "estimator": <fitted scikit-learn classifier>, "card": {...}}

Scoring is vectorized: one ``predict`` call per batch of customers.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np

from services.common.exceptions import ModelError
from services.scorer.features import FEATURE_NAMES
from services.scorer.scorecard import Scorecard

logger = logging.getLogger(__name__)
ARTIFACT_FORMAT = "churnwatch-model"
ARTIFACT_FORMAT_VERSION = 1


class RiskModel(Protocol):
    version: str
    feature_names: tuple[str, ...]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Churn probability in [0, 1] for each row (columns in ``feature_names`` order)."""
        ...


class SklearnModel:
    def __init__(self, estimator: Any, feature_names: tuple[str, ...], version: str,
                 card: dict[str, Any] | None = None):
        self.estimator = estimator
        self.feature_names = feature_names
        self.version = version
        self.card = card or {}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty(0)
        proba = self.estimator.predict_proba(rows)
        return np.clip(proba[:, 1], 0.0, 1.0)


def content_version(estimator: Any, feature_names: tuple[str, ...], name: str) -> str:
    buf = io.BytesIO()
    joblib.dump((estimator, feature_names), buf)
    return f"{name}-{hashlib.sha256(buf.getvalue()).hexdigest()[:12]}"


def save_artifact(path: Path, *, estimator: Any, feature_names: tuple[str, ...], name: str,
                  card: dict[str, Any] | None = None) -> str:
    unknown = [n for n in feature_names if n not in FEATURE_NAMES]
    if unknown:
        raise ModelError(f"features {unknown} are not computed by services.scorer.features")
    version = content_version(estimator, feature_names, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({
        "format": ARTIFACT_FORMAT, "format_version": ARTIFACT_FORMAT_VERSION,
        "version": version, "feature_names": list(feature_names), "estimator": estimator,
        "card": card or {},
    }, path)
    return version


def load_model(path: Path | None) -> RiskModel:
    """The model at ``path``, or the rule scorecard when no path is given."""
    if path is None:
        return Scorecard()
    try:
        blob = joblib.load(path)
    except Exception as exc:
        raise ModelError(f"cannot read model artifact {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path} is not a churnwatch model artifact; write one with `churnwatch train --out`")
    if blob.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ModelError(f"{path} has artifact format {blob.get('format_version')}, this churnwatch "
                         f"reads format {ARTIFACT_FORMAT_VERSION}; retrain with this version")
    names = tuple(blob.get("feature_names") or ())
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if not names or unknown:
        raise ModelError(f"{path} needs features {unknown or '(none listed)'} that this churnwatch "
                         "does not compute; retrain with this version")
    logger.info("loaded model %s from %s", blob["version"], path)
    return SklearnModel(blob["estimator"], names, str(blob["version"]), blob.get("card"))


def predict_features(model: RiskModel, rows: list[dict[str, float]]) -> np.ndarray:
    """One vectorized model call for a batch of feature dicts."""
    if not rows:
        return np.empty(0)
    matrix = np.array([[r[n] for n in model.feature_names] for r in rows], dtype=float)
    return model.predict(matrix)
