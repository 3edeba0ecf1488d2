"""Comparing the challenger served in shadow with the served model, on the stored scores of
the same customers (``churnwatch model compare``; docs/model.md, "A challenger in shadow")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from services.common.riskchange import TIERS


def compare(rows: Iterable[tuple[float, str, float, str]]) -> dict[str, Any]:
    """``rows``: (served score, served tier, shadow score, shadow tier) per customer. How far
    the two agree: rank correlation of the scores, the tier agreement matrix (served tier ->
    shadow tier -> customers), who the challenger would raise to or lower from high, and the
    mean absolute score difference."""
    pairs = list(rows)
    out: dict[str, Any] = {"customers": len(pairs)}
    if not pairs:
        return out | {"note": "no customer has a shadow score yet (is a shadow model recorded "
                              "and have scorers re-scored since?)"}
    served = np.array([p[0] for p in pairs], dtype=float)
    theirs = np.array([p[2] for p in pairs], dtype=float)
    matrix = Counter((p[1], p[3]) for p in pairs)
    rho = float(spearmanr(served, theirs).statistic) if len(pairs) > 2 and \
        served.std() > 0 and theirs.std() > 0 else None
    out.update({
        "spearman": None if rho is None or not np.isfinite(rho) else round(rho, 4),
        "mean_abs_score_diff": round(float(np.mean(np.abs(served - theirs))), 4),
        "tier_agreement": round(sum(n for (a, b), n in matrix.items() if a == b) / len(pairs), 4),
        "tiers": {a: {b: matrix.get((a, b), 0) for b in TIERS} for a in TIERS},
        "shadow_raises_to_high": sum(n for (a, b), n in matrix.items() if b == "high" != a),
        "shadow_lowers_from_high": sum(n for (a, b), n in matrix.items() if a == "high" != b),
    })
    return out


__all__ = ["compare"]
