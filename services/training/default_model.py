"""The default model shipped with churnwatch: trained on generated salon, restaurant and retail
histories with a fixed seed and fixed dates, so ``make model`` rebuilds it with the same
predictions (and the same content-hash version).

    python -m services.training.default_model [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.scoring.model import DEFAULT_MODEL_PATH
from services.synth import PRESETS, generate, write_ndjson
from services.training.train import TrainReport, train

logger = logging.getLogger(__name__)
UNTIL = datetime(2026, 6, 30, tzinfo=UTC)
HISTORY_DAYS = 730
HORIZON_DAYS = 60
CUSTOMERS_PER_PRESET = 1000
SEED = 2026
# Small and quick to serve: the forest is left out of the default (it is ~1 MB per 100 trees
# and ~10x slower per row); `churnwatch train` still considers it.
CANDIDATES = ("logistic_regression", "gradient_boosting")
# The shipped model keeps the calibration it was built with (isotonic) until it is rebuilt on
# a mixture of business types (docs/model.md, "The default model"); `churnwatch train` calibrates
# with a strictly monotone sigmoid.


def build(out_dir: Path, *, customers: int = CUSTOMERS_PER_PRESET,
          log: Callable[[str], None] = lambda s: None) -> TrainReport:
    """Generate the histories into ``out_dir`` and train ``out_dir/churn.joblib``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, object]] = []
    for preset in PRESETS:
        part, _ = generate(preset=preset, customers=customers, seed=SEED,
                           start=UNTIL - timedelta(days=HISTORY_DAYS), end=UNTIL)
        events += part
    history = out_dir / "history.ndjson"
    write_ndjson(events, history)
    try:
        report = train(events_path=history, until=UNTIL, horizon_days=HORIZON_DAYS,
                       out=out_dir / DEFAULT_MODEL_PATH.name, seed=0, log=log,
                       candidates=CANDIDATES, calibration="legacy")
    finally:
        history.unlink(missing_ok=True)
    _repo_relative(Path(report.report_path))
    return report


def _repo_relative(report_json: Path) -> None:
    """The shipped report names files by their path in the repository, not on the machine
    that built it (a clone elsewhere has no /home/someone/churnwatch/...)."""
    root = str(Path(__file__).resolve().parents[2]) + "/"

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(root):
            return value[len(root):]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    if report_json.exists():
        data = json.loads(report_json.read_text())
        report_json.write_text(json.dumps(fix(data), indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH.parent,
                   help=f"directory to write churn.joblib into (default: {DEFAULT_MODEL_PATH.parent})")
    args = p.parse_args(argv)
    def log(message: str) -> None:
        sys.stderr.write(message + "\n")

    report = build(args.out, log=log)
    sys.stdout.write(report.to_text() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
