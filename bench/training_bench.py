"""How long ``churnwatch train`` takes on a million events (target: under 5 minutes on 2 cores).

Part of ``make bench`` (``bench/results/training-<stamp>.json``, started by ``bench/run.py``):

1. generates ``BENCH_TRAIN_EVENTS`` (default 1,000,000; ``make bench QUICK=1``: 100,000) salon
   events over two years with the synthetic generator (``services/synth``), about 19.5 events
   per customer (the customer count is sized from a pilot of 1,000 customers);
2. runs ``churnwatch train --until <end> --horizon-days 90`` on them in a child process, its
   progress bars on this process's stderr, and measures the wall time, events/s and the peak
   resident memory of the largest process (the trainer, or one of its snapshot workers);
3. records the trainer's own step timings (read, snapshots, selection, evaluation, final fit),
   the model it chose and the holdout ROC AUCs, and the load average before and after (the
   machine may be shared: a loaded machine is slower, and the numbers say so).

``python -m bench.training_bench`` runs it alone.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.output import RECORD, RESULTS
from services.synth import generate, write_ndjson

# A quick run (``make bench QUICK=1`` sets BENCH_RECORD=0) trains on a tenth of the events.
EVENTS = int(os.environ.get("BENCH_TRAIN_EVENTS") or (1_000_000 if RECORD else 100_000))
PRESET = os.environ.get("BENCH_TRAIN_PRESET", "salon")
HORIZON_DAYS = 90
DAYS = 730
TARGET_SECONDS = 300.0
END = datetime(2026, 6, 1, tzinfo=UTC)  # fixed: the same data every run


def history(n_events: int, path: Path) -> dict[str, Any]:
    """About ``n_events`` events of ``PRESET`` over two years, written to ``path``."""
    start = END - timedelta(days=DAYS)
    pilot, _ = generate(preset=PRESET, customers=1000, start=start, end=END, seed=3)
    customers = max(100, math.ceil(n_events / (len(pilot) / 1000)))
    t = time.perf_counter()
    events, truth = generate(preset=PRESET, customers=customers, start=start, end=END, seed=3)
    n = write_ndjson(events, path)
    return {"events": n, "customers": customers, "preset": PRESET,
            "generate_seconds": round(time.perf_counter() - t, 1),
            "bytes": path.stat().st_size}


def run(workdir: Path) -> dict[str, Any]:
    events_path = workdir / "history.ndjson"
    data = history(EVENTS, events_path)
    print(f"training bench: {data['events']:,} {PRESET} events of {data['customers']:,} customers "
          f"generated in {data['generate_seconds']} s; training…", file=sys.stderr, flush=True)
    out = workdir / "model.joblib"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "train", "--events", str(events_path),
         "--until", END.isoformat().replace("+00:00", "Z"), "--horizon-days", str(HORIZON_DAYS),
         "--out", str(out)],
        stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    if proc.returncode:
        raise RuntimeError(f"churnwatch train exited {proc.returncode}:\n{proc.stdout}")
    # Linux reports kilobytes: the largest process this one waited for (the trainer, or one
    # of the snapshot workers it forked, whose pages it shares).
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    return {
        "when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        **data, "horizon_days": HORIZON_DAYS,
        "snapshots": report["snapshots"]["rows"],
        "observation_dates": report["snapshots"]["observation_dates"],
        "train_seconds": round(seconds, 1),
        "train_events_per_s": round(data["events"] / seconds),
        "peak_rss_bytes": peak_rss,
        "steps_seconds": report["timings"],
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "target_seconds": TARGET_SECONDS,
        "under_target": seconds < TARGET_SECONDS,
        "chosen": report["model_name"],
        "holdout_roc_auc": {k: v["roc_auc"] for k, v in report["holdout"].items()},
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="churnwatch-train-bench-") as tmp:
        r = run(Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = os.environ.get("BENCH_STAMP") or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path = RESULTS / f"training-{stamp}.json"
    path.write_text(json.dumps(r, indent=2) + "\n")
    steps = r["steps_seconds"]
    print(f"\nchurnwatch training bench — {r['events']:,} {r['preset']} events, "
          f"{r['customers']:,} customers, {r['snapshots']:,} snapshots, {r['cpus']} CPUs")
    print(f"  churnwatch train             {r['train_seconds']:>10,.1f} s   "
          f"{'under' if r['under_target'] else 'OVER'} the {TARGET_SECONDS:.0f} s target")
    print(f"  events/s                     {r['train_events_per_s']:>10,}")
    print(f"  peak RSS (largest process)   {r['peak_rss_bytes'] / 2**20:>10,.0f} MiB")
    print("  steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    print(f"  load average before {r['load_before']}, after {r['load_after']}")
    print(f"  chose {r['chosen']}: holdout ROC AUC " + ", ".join(
        f"{k} {v:.3f}" for k, v in r["holdout_roc_auc"].items() if v is not None))
    print(f"  report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
