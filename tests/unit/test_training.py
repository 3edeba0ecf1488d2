"""``churnwatch train``: point-in-time snapshots, fully observed labels, an end-to-end run on
generated data, and clear errors for bad inputs. Real files, real models, no mocks."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.events import epoch_ms
from services.common.exceptions import ChurnwatchError
from services.scoring.drift import usable
from services.scoring.features import DAY_MS, FEATURE_NAMES, Activity, compute_features
from services.scoring.model import load_model, predict_features
from services.synth import generate, write_ndjson
from services.training import TrainingError, TrainReport, train
from services.training.dataset import (
    build_snapshots,
    churned,
    observation_dates,
    read_events,
    snapshot,
)
from services.training.train import MODELS, _dates, _span, evaluate, plan_split

START = datetime(2024, 1, 1, tzinfo=UTC)
UNTIL = datetime(2025, 7, 1, tzinfo=UTC)
HORIZON = 60


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events, _ = generate(preset="salon", customers=300, start=START, end=UNTIL, seed=11)
    path = tmp_path_factory.mktemp("hist") / "events.ndjson"
    write_ndjson(events, path)
    return path


@pytest.fixture(scope="module")
def trained(history: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[TrainReport, float, list[str]]:
    out = tmp_path_factory.mktemp("model") / "churn.joblib"
    messages: list[str] = []
    t = time.perf_counter()
    report = train(events_path=history, until=UNTIL, horizon_days=HORIZON, out=out, seed=0,
                   log=messages.append)
    return report, time.perf_counter() - t, messages


def _act(day: float, kind: str = "visit", amount: float | None = None, eid: str | None = None
         ) -> Activity:
    ts = epoch_ms(START) + int(day * DAY_MS)
    return Activity(kind=kind, ts=ts, event_id=eid or f"e{day}-{kind}", amount=amount)


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
                    encoding="utf-8")
    return path


# -- point in time --------------------------------------------------------------------------


def test_future_events_never_change_a_snapshot(history: Path) -> None:
    log = read_events(history, UNTIL)
    dates = observation_dates(log.first_ms, log.until_ms, HORIZON)
    before = build_snapshots(log.activities, dates, HORIZON)
    assert len(before) > 1000
    for d in dates:
        # every customer (and a newcomer) does everything right after d, and again much later
        grown = {cid: sorted([*acts, *_future(cid, d)], key=lambda a: (a.ts, a.event_id))
                 for cid, acts in log.activities.items()}
        grown["newcomer"] = _future("newcomer", d)
        after = build_snapshots(grown, [d], HORIZON)
        rows = before.rows_at([d])
        assert np.array_equal(before.X[rows], after.X)
        assert [c for c, r in zip(before.customers, rows, strict=True) if r] == after.customers
        assert (after.y == 0).all()  # only the labels look ahead, by design


def _future(cid: str, d: int) -> list[Activity]:
    return [Activity("transaction", d + 1, f"{cid}-{d}-t", amount=9999.0),
            Activity("complaint", d + 2, f"{cid}-{d}-c", severity="high", status="open"),
            Activity("visit", d + 400 * DAY_MS, f"{cid}-{d}-v")]


def test_snapshot_uses_the_shared_feature_function_and_stops_at_the_date() -> None:
    acts = [_act(d, "transaction", 50.0) for d in (0, 30, 60, 90)]
    obs = epoch_ms(START) + 75 * DAY_MS
    f = snapshot(acts, obs)
    assert f == compute_features(acts[:3], now_ms=obs)
    assert f is not None and f["days_since_last_activity"] == 15.0
    assert snapshot(acts + [_act(76, "transaction", 1.0)], obs) == f
    assert snapshot(acts, epoch_ms(START) - 1) is None  # no history yet
    assert snapshot(acts, epoch_ms(START) + 500 * DAY_MS) is None  # long dormant


def test_labels_look_exactly_one_horizon_ahead() -> None:
    acts = [_act(0), _act(40)]
    obs = epoch_ms(START) + 10 * DAY_MS
    assert churned(acts, obs, 29)       # next event is 30 days later
    assert not churned(acts, obs, 30)   # (obs, obs + 30 days] includes it
    snaps = build_snapshots({"c": acts}, [obs], 29)
    assert snaps.y.tolist() == [1]
    snaps = build_snapshots({"c": acts}, [obs], 30)
    assert snaps.y.tolist() == [0]


def test_labels_are_fully_observed_before_until(history: Path) -> None:
    log = read_events(history, UNTIL)
    until_ms = epoch_ms(UNTIL)
    dates = observation_dates(log.first_ms, until_ms, HORIZON)
    assert 6 <= len(dates) <= 26
    assert all(d + HORIZON * DAY_MS <= until_ms for d in dates)
    assert all(d >= log.first_ms + 60 * DAY_MS for d in dates)
    gaps = {(b - a) // DAY_MS for a, b in zip(dates, dates[1:], strict=False)}
    assert len(gaps) == 1 and 14 <= gaps.pop() <= 30
    with pytest.raises(TrainingError, match="would not be fully observed"):
        build_snapshots(log.activities, [until_ms - DAY_MS], HORIZON, until_ms=until_ms)


def test_events_after_until_are_ignored(history: Path, tmp_path: Path) -> None:
    later = UNTIL + timedelta(days=3)
    extra = [{"event_id": f"late-{i}", "type": "visit", "customer_id": "sal-00001",
              "occurred_at": (UNTIL + timedelta(hours=i + 1)).isoformat()} for i in range(5)]
    path = tmp_path / "more.ndjson"
    path.write_text(history.read_text() + "".join(json.dumps(e) + "\n" for e in extra))
    log = read_events(path, UNTIL)
    assert log.n_after_until == 5
    assert log.activities == read_events(history, UNTIL).activities
    assert read_events(path, later).n_after_until == 0


def test_splits_keep_a_horizon_between_what_is_fitted_and_what_is_judged(history: Path) -> None:
    log = read_events(history, UNTIL)
    dates = observation_dates(log.first_ms, log.until_ms, HORIZON)
    split = plan_split(dates, HORIZON)
    gap = HORIZON * DAY_MS
    assert max(split.fit) < min(split.calibration)
    assert max(split.calibration) + gap <= min(split.holdout)
    assert split.holdout == dates[-len(split.holdout):]
    assert split.folds and split.purged_folds
    for fit, val in split.folds:
        assert max(fit) + gap <= min(val)
        assert max(val) < min(split.calibration)


# -- end to end ---------------------------------------------------------------------------


def test_train_end_to_end_beats_recency(trained: tuple[TrainReport, float, list[str]]) -> None:
    report, seconds, messages = trained
    assert seconds < 45  # four learned models and three classics, cross-validated
    model, recency = report.holdout["model"], report.holdout["recency"]
    assert model.roc_auc is not None and recency.roc_auc is not None
    assert model.roc_auc > 0.7
    assert model.roc_auc >= recency.roc_auc
    assert report.holdout["scorecard"].roc_auc is not None
    assert model.brier is not None and model.brier < 0.2
    assert recency.brier is None
    assert model.recall_at_10 is not None and model.lift_at_10 is not None and model.lift_at_10 > 1.5
    assert report.model_name in MODELS
    assert set(report.selection) == {"logistic_regression", "random_forest", "gradient_boosting",
                                     "portable_logistic"}
    # shipped: the learned model only when it beats every classic on the holdout
    for classic in ("bg_nbd", "pareto_nbd"):
        other = report.holdout.get(classic)
        assert other is None or other.roc_auc is None or model.roc_auc >= other.roc_auc
    assert model.roc_auc_ci is not None and model.roc_auc_ci[0] <= model.roc_auc <= model.roc_auc_ci[1]
    assert any("chose" in m for m in messages)


def test_train_writes_an_artifact_the_scorer_serves(trained: tuple[TrainReport, float, list[str]]
                                                    ) -> None:
    report, _, _ = trained
    model = load_model(Path(report.out))
    assert model.version == report.model_version
    assert model.version.startswith(report.model_name + "-")
    assert model.feature_names == FEATURE_NAMES
    now = epoch_ms(UNTIL)
    loyal = compute_features([_act(d, "transaction", 60.0, f"l{d}") for d in range(0, 540, 30)], now)
    gone = compute_features([_act(d, "transaction", 60.0, f"g{d}") for d in range(0, 300, 30)], now)
    scores = predict_features(model, [loyal, gone])
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    assert scores[1] > scores[0]
    card = getattr(model, "card", {})
    assert card["model"] == report.model_name and card["horizon_days"] == HORIZON
    assert card["snapshots"] == report.snapshots["rows"] and card["customers"] > 250
    assert card["holdout"]["model"]["roc_auc"] == report.holdout["model"].roc_auc
    assert card["data_range"][0].startswith("2024-01")
    # drift's reference: the training snapshot's decile bins of every feature and the score
    ref = card["reference"]
    assert usable(ref) and list(ref["features"]) == list(FEATURE_NAMES) and ref["rows"] > 0
    for one in [*ref["features"].values(), ref["score"]]:
        assert len(one["proportions"]) == len(one["edges"]) + 1 <= 10
        assert abs(sum(one["proportions"]) - 1) < 1e-3


def test_report_is_a_table_and_a_json_file(trained: tuple[TrainReport, float, list[str]]) -> None:
    report, _, _ = trained
    text = report.to_text()
    for needle in ("ROC AUC", "PR AUC", "Brier", "Recall@10%", "Lift@10%", "recency baseline",
                   "rule scorecard", f"model ({report.model_name})"):
        assert needle in text
    on_disk = json.loads(Path(report.report_path).read_text())
    assert report.report_path == report.out + ".report.json"
    assert on_disk == json.loads(json.dumps(report.to_dict()))
    assert on_disk["holdout"]["model"]["roc_auc"] == report.holdout["model"].roc_auc
    assert on_disk["splits"]["holdout"]["rows"] == report.holdout["model"].rows


def test_invalid_lines_are_counted_with_line_numbers(history: Path, tmp_path: Path) -> None:
    lines = history.read_text().splitlines()
    lines[2] = "{not json"
    lines[5] = json.dumps({"event_id": "x", "type": "transaction", "customer_id": "c",
                           "occurred_at": "2024-05-01T10:00:00"})
    lines.insert(7, "")
    lines.append(lines[10])  # a duplicate event id is not an error
    path = _write(tmp_path / "dirty.ndjson", lines)
    log = read_events(path, UNTIL)
    assert log.n_invalid == 2 and log.n_duplicates == 1
    assert [x.line for x in log.invalid] == [3, 6]
    assert "not valid JSON" in log.invalid[0].message
    assert "occurred_at" in log.invalid[1].message and "offset" in log.invalid[1].message
    report = train(events_path=path, until=UNTIL, horizon_days=HORIZON, out=tmp_path / "m.joblib")
    assert report.data["invalid_lines"] == 2
    assert [x["line"] for x in report.data["invalid_examples"]] == [3, 6]
    assert any("2 invalid lines" in w for w in report.warnings)


# -- bad inputs ----------------------------------------------------------------------------


def _event(i: int, customer: str, when: datetime) -> dict[str, Any]:
    return {"event_id": f"e{customer}-{i}", "type": "transaction", "customer_id": customer,
            "occurred_at": when.isoformat(), "amount": 20.0}


def test_a_split_with_one_class_says_which_and_what_it_held(tmp_path: Path) -> None:
    # one customer, two purchases a month apart, then nothing: churn and return exist across
    # the history, but the calibration date's one snapshot churned
    start = datetime(2025, 11, 12, 5, tzinfo=UTC)
    path = _write(tmp_path / "tiny.ndjson", [_event(0, "c1", start),
                                             _event(1, "c1", start + timedelta(days=30, hours=3))])
    with pytest.raises(TrainingError) as info:
        train(events_path=path, until=datetime(2025, 12, 31, 23, tzinfo=UTC), horizon_days=5,
              out=tmp_path / "m.joblib")
    message = str(info.value)
    assert re.search(r"only one class among the \w+( \w+)? snapshots \(\d+ dates?: "
                     r"\d{4}-\d\d-\d\d( \.\. \d{4}-\d\d-\d\d)?\): ", message), message
    assert "1 snapshots" not in message and "supply more customers" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        train(events_path=tmp_path / "nope.ndjson", until=UNTIL, horizon_days=30,
              out=tmp_path / "m.joblib")


def test_nothing_valid(tmp_path: Path) -> None:
    path = _write(tmp_path / "junk.ndjson", ["hello", "[1, 2]", {"type": "visit"}])
    with pytest.raises(TrainingError, match=r"no valid event .*3 invalid; line 1: not valid JSON"):
        train(events_path=path, until=UNTIL, horizon_days=30, out=tmp_path / "m.joblib")


def test_everything_after_until(history: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="after --until .*choose a later --until"):
        train(events_path=history, until=START - timedelta(days=1), horizon_days=30,
              out=tmp_path / "m.joblib")


def test_bad_arguments(history: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="positive number of days"):
        train(events_path=history, until=UNTIL, horizon_days=0, out=tmp_path / "m.joblib")
    with pytest.raises(TrainingError, match="no UTC offset"):
        train(events_path=history, until=datetime(2025, 7, 1), horizon_days=30,
              out=tmp_path / "m.joblib")
    with pytest.raises(TrainingError, match="is a directory"):
        train(events_path=history, until=UNTIL, horizon_days=30, out=tmp_path)


def test_horizon_too_long_for_the_data(history: Path, tmp_path: Path) -> None:
    # the advice is the rule the docs give (a history of horizon + 60 days), and it works
    with pytest.raises(TrainingError, match=r"horizon too long .*at least 600 days") as info:
        train(events_path=history, until=UNTIL, horizon_days=540, out=tmp_path / "m.joblib")
    advised = re.search(r"--horizon-days (\d+) or less", str(info.value))
    assert advised is not None
    report = train(events_path=history, until=UNTIL, horizon_days=int(advised.group(1)),
                   out=tmp_path / "m.joblib")
    assert report.model_version


def test_too_few_observation_dates(history: Path, tmp_path: Path) -> None:
    # 120 days of history cannot show a 90-day horizon's labels often enough; say what would
    with pytest.raises(TrainingError, match=r"too few observation dates.*--horizon-days \d+ or less"):
        train(events_path=history, until=START + timedelta(days=120), horizon_days=90,
              out=tmp_path / "m.joblib")


def test_a_short_history_trains_and_says_how_much_evidence_it_rests_on(tmp_path: Path) -> None:
    """Nine months of a shop's history and a 90-day horizon: what a business going live has."""
    until = datetime(2025, 10, 1, tzinfo=UTC)
    events, _ = generate(preset="retail", customers=400, start=until - timedelta(days=270),
                         end=until, seed=5)
    path = tmp_path / "short.ndjson"
    write_ndjson(events, path)
    report = train(events_path=path, until=until, horizon_days=90, out=tmp_path / "m.joblib")
    e = report.evidence
    assert e["holdout_dates"] >= 1 and e["holdout_rows"] > 100 and e["fit_dates"] >= 2
    assert e["purge_days"] < 90 and any("short history" in w for w in report.warnings)
    hold = report.holdout
    assert {"model", "recency", "scorecard"} <= set(hold)
    assert {"bg_nbd", "pareto_nbd"} - {report.model_name} <= set(hold)  # the chosen one is "model"
    best_classic = max(hold[k].roc_auc or 0 for k in ("recency", "bg_nbd", "pareto_nbd")
                       if k in hold)
    assert hold["model"].roc_auc is not None and hold["model"].roc_auc >= best_classic - 1e-9
    text = report.to_text()
    assert "Evidence" in text and "Pareto/NBD" in text
    # a split of one date reads as one date, not "1 dates (d .. d)"
    assert "1 dates" not in text and not re.search(r"(\d{4}-\d\d-\d\d) \.\. \1", text)
    assert load_model(tmp_path / "m.joblib").version == report.model_version


def test_the_report_counts_dates_in_words() -> None:
    assert _dates(1) == "1 date" and _dates(14, "observation ") == "14 observation dates"
    assert _span("2025-09-25T00:00:00+00:00", "2025-09-25T00:00:00+00:00") == "2025-09-25"
    assert _span("2025-08-21T00:00", "2025-09-18T00:00") == "2025-08-21 .. 2025-09-18"


def test_calibration_keeps_the_models_order(trained: tuple[TrainReport, float, list[str]],
                                            history: Path) -> None:
    """No plateaus: distinct feature rows keep distinct scores after calibration."""
    report, _, _ = trained
    model = load_model(Path(report.out))
    log = read_events(history, UNTIL)
    dates = observation_dates(log.first_ms, log.until_ms, HORIZON)
    snaps = build_snapshots(log.activities, dates[-1:], HORIZON)
    rows = np.unique(snaps.X, axis=0)
    scores = model.predict(rows)
    assert len(np.unique(scores)) >= 0.95 * len(rows)
    assert report.calibration == "sigmoid"


def test_a_calibrated_recency_model_keeps_rising_with_the_absence() -> None:
    """A business whose customers come every few days: the median recency is ~3 days. The
    old shape, 1 - exp(-days / 3), was ~1 from two weeks on, so its calibrated score stopped
    rising there (a customer away for five months scored as one away for a month)."""
    from services.training.classics import RECENCY_COL, RecencyModel
    from services.training.train import _calibrated

    rng = np.random.default_rng(3)
    n = 4000
    days = np.where(rng.random(n) < 0.8, rng.exponential(3.0, n), rng.uniform(5.0, 300.0, n))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(days - 30.0) / 6.0))).astype(int)
    X = np.zeros((n, len(FEATURE_NAMES)))
    X[:, RECENCY_COL] = days
    fitted = RecencyModel().fit(X, y)
    model, method = _calibrated(fitted, X, y)
    assert method == "sigmoid"
    probe = np.zeros((7, len(FEATURE_NAMES)))
    probe[:, RECENCY_COL] = [1, 7, 14, 30, 60, 150, 300]
    p = model.predict_proba(probe)[:, 1]
    assert (np.diff(p) > 0).all() and p[0] < 0.1 and p[-2] > 0.9
    # a model fitted before the log shape (pickled without shape_) keeps scoring as it did
    del fitted.shape_
    old = fitted.predict_proba(probe)[:, 1]
    assert old == pytest.approx(1.0 - np.exp(-probe[:, RECENCY_COL] / fitted.scale_))


def test_pareto_nbd_recovers_its_parameters_and_knows_who_is_alive() -> None:
    from sklearn.metrics import roc_auc_score

    from services.training.classics import ParetoParams, pareto_fit, pareto_p_alive

    rng = np.random.default_rng(7)
    n, truth = 3000, ParetoParams(r=0.8, alpha=25.0, s=0.8, beta=300.0)
    lam = rng.gamma(truth.r, 1 / truth.alpha, n)
    life = rng.exponential(1 / rng.gamma(truth.s, 1 / truth.beta, n))
    T = np.full(n, 365.0)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t, end = 0.0, min(life[i], T[i])
        while (t := t + rng.exponential(1 / lam[i])) <= end:
            x[i], t_x[i] = x[i] + 1, t
    fitted = pareto_fit(x, t_x, T)
    assert 0.5 < fitted.r / truth.r < 2 and 0.5 < fitted.alpha / truth.alpha < 2
    alive = pareto_p_alive(fitted, x, t_x, T)
    assert ((0 <= alive) & (alive <= 1)).all()
    assert roc_auc_score(life > T, alive) > 0.85


def test_only_one_class(tmp_path: Path) -> None:
    lines = [_event(i, f"c{c}", START + timedelta(days=3 * i, hours=c))
             for c in range(20) for i in range(180)]
    path = _write(tmp_path / "loyal.ndjson", lines)
    with pytest.raises(TrainingError, match="only one class: .*came back within 30 days"):
        train(events_path=path, until=START + timedelta(days=540), horizon_days=30,
              out=tmp_path / "m.joblib")


def test_training_errors_are_churnwatch_errors() -> None:
    assert issubclass(TrainingError, ChurnwatchError)


def test_metrics_of_a_perfect_and_a_useless_score() -> None:
    y = np.array([0] * 90 + [1] * 10)
    perfect = evaluate(y, y.astype(float))
    assert perfect.roc_auc == 1.0 and perfect.recall_at_10 == 1.0 and perfect.lift_at_10 == 10.0
    assert perfect.brier == 0.0
    flat = evaluate(y, np.full(100, 0.1), probabilities=False)
    assert flat.roc_auc == 0.5 and flat.brier is None
    assert evaluate(np.zeros(5, dtype=int), np.zeros(5)).roc_auc is None


# -- evaluation report, BG/NBD, progress ---------------------------------------------------


def test_report_has_plots_card_and_calibration_table(trained: tuple[TrainReport, float, list[str]]
                                                     ) -> None:
    report, _, _ = trained
    out = Path(report.out)
    for suffix in (".roc.png", ".calibration.png"):
        png = out.with_name(out.name + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads(out.with_name(out.name + ".card.json").read_text())
    assert card["model_version"] == report.model_version and card["model"] == report.model_name
    assert card["features"] == list(FEATURE_NAMES) and card["training_seconds"] > 0
    assert card["data_range"][0].startswith("2024-01")
    assert {"model", "recency", "scorecard"} <= set(card["holdout"])
    assert set(card["holdout"]) - {"model", "recency", "scorecard"} <= set(MODELS)
    assert card["evidence"]["holdout_rows"] == report.holdout["model"].rows
    table = report.calibration_table
    assert table and sum(r["rows"] for r in table) == report.holdout["model"].rows
    assert all(0 <= r["predicted"] <= 1 and 0 <= r["observed"] <= 1 for r in table)
    assert "Calibration (holdout)" in report.to_text()
    assert report.bgnbd_params is not None and report.bgnbd_params["r"] > 0
    assert report.explainer_r2 is not None and report.explainer_r2 > 0.5


def test_bgnbd_recovers_its_parameters_and_ranks_the_silent() -> None:
    from services.training.bgnbd import Params, fit, p_alive, p_silent

    rng = np.random.default_rng(0)
    true = Params(r=0.9, alpha=30.0, a=0.7, b=3.0)
    n, T = 6000, np.full(6000, 365.0)
    lam = rng.gamma(true.r, 1 / true.alpha, n)
    p = rng.beta(true.a, true.b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    est = fit(x, t_x, T)
    assert abs(est.r - true.r) / true.r < 0.25 and abs(est.alpha - true.alpha) / true.alpha < 0.3
    # same frequency, the one silent for longer is less likely alive and more likely to stay silent
    recent, quiet = np.array([5.0, 5.0]), np.array([350.0, 120.0])
    alive = p_alive(est, recent, quiet, np.array([365.0, 365.0]))
    assert alive[0] > alive[1]
    silent = p_silent(est, recent, quiet, np.array([365.0, 365.0]), 60)
    assert silent[1] > silent[0] and ((0 <= silent) & (silent <= 1)).all()
    assert p_alive(est, np.zeros(1), np.zeros(1), np.full(1, 200.0))[0] == 1.0  # BG/NBD: no repeat, alive


def test_progress_goes_to_the_stream_given(history: Path, tmp_path: Path) -> None:
    import io

    from services.training.progress import Progress

    buf = io.StringIO()
    with Progress("step", 40, stream=buf) as bar:
        for _ in range(40):
            bar.advance()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("step: 0%") and lines[-1].startswith("step: 100% (40/40")
    assert len(lines) <= 12
    silent = io.StringIO()
    with Progress("quiet", 5, stream=None) as bar:
        bar.advance(5)
    assert silent.getvalue() == ""


def test_candidates_can_be_restricted_and_unknown_ones_are_refused(history: Path, tmp_path: Path
                                                                   ) -> None:
    with pytest.raises(TrainingError, match=r"unknown candidate model\(s\) \['xgboost'\]"):
        train(events_path=history, until=UNTIL, horizon_days=HORIZON, out=tmp_path / "m.joblib",
              candidates=["xgboost"])


# -- speed without changing results ------------------------------------------------------------


def test_snapshot_workers_build_exactly_the_rows_of_one_process(history: Path) -> None:
    log = read_events(history, UNTIL)
    dates = observation_dates(log.first_ms, log.until_ms, HORIZON)
    one = build_snapshots(log.activities, dates, HORIZON, workers=1)
    two = build_snapshots(log.activities, dates, HORIZON, workers=2)
    assert np.array_equal(one.X, two.X) and np.array_equal(one.y, two.y)
    assert np.array_equal(one.obs_ms, two.obs_ms) and one.customers == two.customers
    assert (one.y.dtype, one.obs_ms.dtype) == (two.y.dtype, two.obs_ms.dtype)


def test_bootstrap_interval_is_the_one_of_resampled_roc_auc() -> None:
    from sklearn.metrics import roc_auc_score

    from services.training.train import bootstrap_auc

    rng = np.random.default_rng(3)
    y = (rng.random(700) < 0.3).astype(int)
    score = np.round(rng.random(700) + 0.4 * y, 1)  # many ties
    draws = np.random.default_rng(0)
    aucs = []
    for _ in range(200):
        idx = draws.integers(0, len(y), len(y))
        aucs.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    assert bootstrap_auc(y, score, seed=0) == [round(float(lo), 4), round(float(hi), 4)]


def test_report_shows_the_ceiling_from_the_true_churn_times(tmp_path: Path) -> None:
    from services.synth import write_truth

    events, truth = generate(preset="salon", customers=300, start=START, end=UNTIL, seed=11)
    path = tmp_path / "events.ndjson"
    write_ndjson(events, path)
    write_truth(truth, tmp_path / "events.ndjson.truth.ndjson")
    report = train(events_path=path, until=UNTIL, horizon_days=HORIZON,
                   out=tmp_path / "m.joblib", candidates=["logistic_regression"])
    c = report.ceiling
    assert c is not None and c["rows"] == report.holdout["model"].rows
    assert c["rows_without_truth"] == 0
    # the oracle knows who churned: it ranks far above chance, and above recency alone
    assert c["roc_auc"] > 0.9 and c["roc_auc"] > report.holdout["recency"].roc_auc
    # knowing only the churns up to each date is less, and still above recency
    assert report.holdout["recency"].roc_auc < c["roc_auc_known_at_date"] <= c["roc_auc"]
    assert "Ceiling" in report.to_text()
    saved = json.loads(Path(report.report_path).read_text())
    assert saved["ceiling"]["roc_auc"] == c["roc_auc"]


def test_calibrating_on_some_customers_gives_their_churn_rate(history: Path, tmp_path: Path
                                                              ) -> None:
    """The default model learns to rank from shops unlike the presets but takes its
    probabilities from the presets' customers (``calibrate_on``): beside a shop whose customers
    lapse far more often, the salon's predicted churn stays near the salon's own rate."""
    from services.synth import process
    from services.training.dataset import churned, read_events, snapshot

    shop = process.World(300, 7, r=0.5, alpha=10.0, a=3.0, b=2.0, prefix="lapsing1")
    mixed = tmp_path / "mixed.ndjson"
    write_ndjson([json.loads(line) for line in history.read_text().splitlines()]
                 + process.generate(shop, start=START, days=(UNTIL - START).days)[0], mixed)
    obs = epoch_ms(UNTIL) - HORIZON * DAY_MS
    seen, salon = [], []
    for acts in read_events(history, UNTIL).activities.values():
        if (features := snapshot(acts, obs)) is not None:
            seen.append(acts)
            salon.append(features)
    rate = float(np.mean([churned(acts, obs, HORIZON) for acts in seen]))

    def salon_mean(calibrate_on: Any) -> tuple[float, float]:
        out = tmp_path / f"m{calibrate_on is None}.joblib"
        train(events_path=mixed, until=UNTIL, horizon_days=HORIZON, out=out, seed=0,
              candidates=("portable_logistic",), calibrate_on=calibrate_on)
        report = json.loads(Path(str(out) + ".report.json").read_text())
        return (float(predict_features(load_model(out), salon).mean()),
                report["holdout"]["model"]["roc_auc"])

    pooled, pooled_auc = salon_mean(None)
    own, own_auc = salon_mean(lambda c: not c.startswith("lapsing"))
    # the shop's lapses no longer lift the salon's probabilities above its own churn rate
    assert abs(own - rate) < abs(pooled - rate) / 2, (own, pooled, rate)
    assert own_auc == pytest.approx(pooled_auc, abs=0.01)  # calibration keeps the order
