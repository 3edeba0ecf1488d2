"""The default model travels: trained on the other businesses, it ranks a business it never saw
at least as well as recency alone (issue 16, item 4; docs/model.md, "The default model"): not
below it beyond two standard errors of the paired difference, and above it on average."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.scoring.model import DEFAULT_MODEL_PATH
from services.synth import PRESETS, generate
from services.training.travel import leave_one_out, to_text


def test_the_shipped_model_beats_recency_on_every_business_it_was_not_trained_on() -> None:
    report = json.loads(DEFAULT_MODEL_PATH.with_name(DEFAULT_MODEL_PATH.name + ".report.json")
                        .read_text())
    travel = report["travel"]
    assert [r["held_out"] for r in travel["presets"]] == list(PRESETS)
    assert "eshop" in PRESETS  # an online shop of mostly one-time buyers is in the mixture
    assert "school" in PRESETS  # and a business whose leavers simply stop coming
    for row in travel["presets"]:
        assert row["held_out"] not in row["trained_on"]
        assert row["rows"] > 1000 and 0 < row["churned"] < row["rows"]
        assert row["over_recency"] + 2 * row["over_recency_stderr"] >= 0, row
        assert row["not_below_recency"]
        assert abs(row["over_recency"] - (row["model_roc_auc"] - row["recency_roc_auc"])) < 1e-4
    assert travel["none_below_recency"]
    # a tie where recency is near the ceiling; clearly above it on average
    margins = [row["over_recency"] for row in travel["presets"]]
    assert sum(margins) / len(margins) > 0.01 and sum(m > 0 for m in margins) >= len(margins) - 1
    # the shipped model is the recipe that was checked
    assert report["model_name"] == travel["presets"][0]["chosen"]
    assert report["calibration"] == travel["calibration"] == "sigmoid"


def test_leave_one_out_runs_on_a_small_history() -> None:
    until = datetime(2025, 7, 1, tzinfo=UTC)
    start = until - timedelta(days=400)
    histories = {p: generate(preset=p, customers=90, start=start, end=until, seed=5)[0]
                 for p in ("salon", "restaurant", "eshop")}
    messages: list[str] = []
    travel = leave_one_out(histories, until=until, horizon_days=45,
                           candidates=("portable_logistic",), log=messages.append)
    rows = {r["held_out"]: r for r in travel["presets"]}
    assert set(rows) == set(histories)
    assert rows["eshop"]["trained_on"] == ["salon", "restaurant"]
    for r in rows.values():
        assert r["rows"] > 0 and r["chosen"] == "portable_logistic"
        for key in ("model_roc_auc", "recency_roc_auc", "bg_nbd_own_roc_auc", "seen_roc_auc"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0
        assert r["beats_recency"] == (r["model_roc_auc"] >= r["recency_roc_auc"])
        assert r["not_below_recency"] == (r["over_recency"] + 2 * r["over_recency_stderr"] >= 0)
    assert travel["customers"]["salon"] <= 90
    assert len(messages) == 3
    text = to_text(travel)
    assert "held out" in text and "eshop" in text and "recency" in text and " ± " in text
    json.dumps(travel)  # stored in the report as is
