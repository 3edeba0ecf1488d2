"""Risk models the scorer can serve, and which one is active.

- the **default model**, trained from the generator, ships in ``default_model/`` (rebuilt by
  ``make model``) and serves when ``CHURNWATCH_MODEL`` is unset;
- ``CHURNWATCH_MODEL=PATH`` serves an artifact written by ``churnwatch train --out``;
- ``CHURNWATCH_MODEL=scorecard`` serves the rule scorecard (``docs/scoring.md``).

An artifact is a joblib file holding a dict::

    {"format": "churnwatch-model", "format_version": 2, "version": "<name>-<content hash>",
     "feature_schema": FEATURE_SCHEMA_VERSION, "feature_names": [...],
     "estimator": <fitted classifier with predict_proba>, "explainer": {...} | None,
     "sklearn_version": "1.9.1", "card": {...}}

The version's hash covers everything that decides a score (estimator parameters and exact
predictions on a fixed probe, feature list, schema, explainer), not the card, so retraining the
same data the same way gives the same version (``make model`` relies on it).

``churnwatch model activate PATH`` records the artifact in Redis (``Keys.active_model``);
every scorer (timer) and the API (before ``as_of`` scoring) :meth:`ActiveModel.refresh` from
there and swap models without a restart. Scoring is vectorized: one ``predict`` per batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np

from services.common.exceptions import ConfigError, ModelError
from services.scoring.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from services.scoring.scorecard import Scorecard

logger = logging.getLogger(__name__)
ARTIFACT_FORMAT = "churnwatch-model"
ARTIFACT_FORMAT_VERSION = 2
SCORECARD = "scorecard"
DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model") / "churn.joblib"


class RiskModel(Protocol):
    version: str
    feature_names: tuple[str, ...]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Churn probability in [0, 1] for each row (columns in ``feature_names`` order)."""
        ...


class SklearnModel:
    """A trained artifact. ``attributions`` explains scores with the artifact's linear
    surrogate: per row and feature, how far the feature pushes the model's log-odds above a
    reference (typical retained) customer — one matrix operation per batch, no model calls."""

    def __init__(self, estimator: Any, feature_names: tuple[str, ...], version: str,
                 card: dict[str, Any] | None = None, explainer: dict[str, Any] | None = None):
        self.estimator = estimator
        self.feature_names = feature_names
        self.version = version
        self.card = card or {}
        self.explainer = explainer

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty(0)
        proba = self.estimator.predict_proba(rows)
        return np.clip(proba[:, 1], 0.0, 1.0)

    def attributions(self, rows: np.ndarray) -> np.ndarray | None:
        """(rows, features) contributions in log-odds; None when the artifact has no explainer."""
        ex = self.explainer
        if not ex or len(rows) == 0:
            return None
        z = (np.arcsinh(rows) - ex["center"]) / ex["scale"]
        return np.asarray((z - ex["reference"]) * ex["coef"])


def content_version(name: str, estimator: Any, feature_names: Sequence[str],
                    explainer: dict[str, Any] | None) -> str:
    """``<name>-<hash>`` of what decides a score: the estimator's class and parameters, its
    exact predictions on a fixed probe, the feature list and schema, and the explainer.

    Hashing behaviour rather than pickle bytes keeps the version stable across processes
    (pickle output depends on object identity) while any change of a fitted number shows."""
    h = hashlib.sha256()
    h.update(f"{name}|{_canon(estimator)}|".encode())
    h.update(("|".join(feature_names) + f"|schema={FEATURE_SCHEMA_VERSION}|").encode())
    probe = np.random.default_rng(20261123).lognormal(1.0, 1.5, size=(256, len(feature_names)))
    # rounded: SIMD reductions may differ in the last bits between processes (alignment)
    proba = np.round(np.asarray(estimator.predict_proba(probe), dtype=np.float64), 8)
    h.update(np.ascontiguousarray(proba).tobytes())
    for key in sorted(explainer or {}):
        value = np.round(np.asarray(explainer[key], dtype=np.float64), 8) if explainer else None
        h.update(key.encode() + (value.tobytes() if value is not None else b""))
    return f"{name}-{h.hexdigest()[:12]}"


def _canon(value: Any) -> str:
    """A process-independent description of an estimator's parameters (a plain ``repr``
    shows functions with their memory address)."""
    if hasattr(value, "get_params"):
        params = sorted(value.get_params(deep=False).items())
        return f"{type(value).__qualname__}(" + ",".join(f"{k}={_canon(v)}" for k, v in params) + ")"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canon(v) for v in value) + "]"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def save_artifact(path: Path, *, estimator: Any, feature_names: tuple[str, ...], name: str,
                  card: dict[str, Any] | None = None, explainer: dict[str, Any] | None = None
                  ) -> str:
    unknown = [n for n in feature_names if n not in FEATURE_NAMES]
    if unknown:
        raise ModelError(f"features {unknown} are not computed by services.scoring.features")
    version = content_version(name, estimator, feature_names, explainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({
        "format": ARTIFACT_FORMAT, "format_version": ARTIFACT_FORMAT_VERSION,
        "version": version, "feature_schema": FEATURE_SCHEMA_VERSION,
        "feature_names": list(feature_names), "estimator": estimator, "explainer": explainer,
        "sklearn_version": _sklearn_version(), "card": card or {},
    }, path, compress=3)
    return version


def read_artifact(path: Path) -> SklearnModel:
    """Load and check an artifact; :class:`ModelError` says why one cannot be served."""
    if not path.is_file():
        raise ModelError(f"model artifact {path} does not exist; write one with "
                         "`churnwatch train --out PATH`")
    try:
        blob = joblib.load(path)
    except Exception as exc:
        raise ModelError(f"cannot read model artifact {path}: {type(exc).__name__}: {exc}; it was "
                         "probably written by another churnwatch/scikit-learn version — retrain "
                         "it with `churnwatch train`") from exc
    if not isinstance(blob, dict) or blob.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path} is not a churnwatch model artifact; write one with "
                         "`churnwatch train --out`")
    if blob.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ModelError(f"{path} has artifact format {blob.get('format_version')}, this churnwatch "
                         f"reads format {ARTIFACT_FORMAT_VERSION}; retrain with this version")
    if blob.get("feature_schema") != FEATURE_SCHEMA_VERSION:
        raise ModelError(f"{path} was trained on feature schema {blob.get('feature_schema')}, this "
                         f"churnwatch computes schema {FEATURE_SCHEMA_VERSION}; its features would "
                         "not mean what it learned — retrain with this version")
    names = tuple(blob.get("feature_names") or ())
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if not names or unknown:
        raise ModelError(f"{path} needs features {unknown or '(none listed)'} that this churnwatch "
                         "does not compute; retrain with this version")
    trained_with, here = str(blob.get("sklearn_version", "?")), _sklearn_version()
    if trained_with.split(".")[:2] != here.split(".")[:2]:
        raise ModelError(f"{path} was trained with scikit-learn {trained_with}, this installation "
                         f"has {here}; pickled models are not portable across versions — retrain "
                         "it with `churnwatch train` (the default model: `make model`)")
    if not hasattr(blob.get("estimator"), "predict_proba"):
        raise ModelError(f"{path} holds no classifier with predict_proba; retrain it")
    return SklearnModel(blob["estimator"], names, str(blob["version"]), blob.get("card"),
                        blob.get("explainer"))


def load_model(path: Path | None) -> RiskModel:
    """``path`` (or ``scorecard``); None serves the shipped default model, falling back to
    the scorecard — loudly — only if the default cannot be loaded here."""
    if path is not None and str(path) == SCORECARD:
        return Scorecard()
    if path is None:
        try:
            model = read_artifact(DEFAULT_MODEL_PATH)
        except ModelError as exc:
            logger.error("the default model cannot be served (%s); serving the rule scorecard "
                         "instead — run `make model` to rebuild it", exc)
            return Scorecard()
        logger.info("serving the default model %s", model.version)
        return model
    try:
        model = read_artifact(path)
    except ModelError as exc:  # a configured artifact: the service must not start with it
        raise ConfigError(f"CHURNWATCH_MODEL={path} cannot be served: {exc}") from exc
    logger.info("loaded model %s from %s", model.version, path)
    return model


def predict_features(model: RiskModel, rows: list[dict[str, float]]) -> np.ndarray:
    """One vectorized model call for a batch of feature dicts."""
    if not rows:
        return np.empty(0)
    return model.predict(feature_matrix(model, rows))


def feature_matrix(model: RiskModel, rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[r[n] for n in model.feature_names] for r in rows], dtype=float).reshape(
        len(rows), len(model.feature_names))


# -- which model is active ----------------------------------------------------------------


def activation_record(path: Path, model: RiskModel) -> str:
    return json.dumps({"path": str(path), "version": model.version,
                       "activated_at": datetime.now(UTC).isoformat(timespec="seconds")})


class ActiveModel:
    """The model a process serves right now: the configured one until ``churnwatch model
    activate`` records another in Redis. :meth:`refresh` follows the record; an artifact
    that cannot be served is logged once and the current model kept."""

    def __init__(self, configured: RiskModel):
        self.configured = configured
        self.current: RiskModel = configured
        self._cache: dict[str, RiskModel] = {configured.version: configured}
        self._failed: set[str] = set()
        self._checked = 0.0

    @property
    def version(self) -> str:
        return self.current.version

    def known(self) -> dict[str, RiskModel]:
        """Every model this process has served or loaded, by version (the configured one,
        the current one and those activated since it started): model quality reads their
        cards (reference distributions, holdout metrics, horizon)."""
        return {self.current.version: self.current, **self._cache}  # the current one first

    async def refresh(self, redis: Any, keys: Any, *, min_interval: float = 0.0) -> bool:
        """Follow the activation record; True when the served model changed. With
        ``min_interval``, Redis is read at most that often (the API calls it per request)."""
        now = time.monotonic()
        if min_interval and now - self._checked < min_interval:
            return False
        self._checked = now
        raw = await redis.get(keys.active_model)
        if not raw:
            return self._swap(self.configured)
        model = await self._load(raw, self.current.version)
        return False if model is None else self._swap(model)

    async def _load(self, raw: str, current: str | None) -> RiskModel | None:
        """The model an activation record names (None: the current one, or one that cannot
        be served — logged once)."""
        try:
            spec = json.loads(raw)
            path, version = Path(spec["path"]), str(spec["version"])
        except (ValueError, KeyError, TypeError):
            if raw not in self._failed:
                self._failed.add(raw)
                logger.error("ignoring the model record %r: not a churnwatch activation "
                             "(use `churnwatch model activate` or `model shadow`)", raw[:200])
            return None
        if version == current:
            return None
        model = self._cache.get(version)
        if model is None:
            if raw in self._failed:
                return None
            try:
                model = await asyncio.to_thread(read_artifact, path)
                if model.version != version:
                    raise ModelError(f"{path} now holds {model.version}, not the activated "
                                     f"{version}; activate it again")
            except ModelError as exc:
                self._failed.add(raw)
                logger.error("cannot switch to model %s: %s; still serving %s", version, exc,
                             current)
                return None
            self._cache[version] = model
        return model

    def _swap(self, model: RiskModel) -> bool:
        if model is self.current:
            return False
        logger.info("switching model %s -> %s", self.current.version, model.version)
        self.current = model
        return True


class ShadowModel(ActiveModel):
    """The challenger served in shadow (``churnwatch model shadow``): scored beside the served
    model for every customer and stored, never deciding a tier or alerting; None when none is
    recorded. Follows ``<prefix>:model:shadow`` as :class:`ActiveModel` follows the active
    record."""

    def __init__(self) -> None:
        super().__init__(Scorecard())  # unused: a shadow has no configured model
        self.shadow: RiskModel | None = None

    async def refresh(self, redis: Any, keys: Any, *, min_interval: float = 0.0) -> bool:
        raw = await redis.get(keys.shadow_model)
        if not raw:
            changed, self.shadow = self.shadow is not None, None
            return changed
        model = await self._load(raw, self.shadow.version if self.shadow else None)
        if model is None or model is self.shadow:
            return False
        logger.info("shadow model %s (was %s)", model.version,
                    self.shadow.version if self.shadow else "none")
        self.shadow = model
        return True


__all__ = ["ActiveModel", "ShadowModel", "RiskModel", "SklearnModel", "load_model", "predict_features",
           "read_artifact", "save_artifact"]
