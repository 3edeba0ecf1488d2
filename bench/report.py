"""Merge the parts of one ``make bench`` run into one report and a short table.

``make bench`` names the run (BENCH_STAMP) and runs ``bench.run`` (scorer vs trivial Faust vs
bare consumer, Redis memory, notifier), ``bench.api_bench`` (at-risk pages, risk reads under
ingest) and ``bench.pipeline`` (HTTP ingest vs bare producer, POST -> scored, latencies,
exactly-once count); ``bench.run`` also starts ``bench.training_bench`` (``churnwatch train`` on
a million events). Each writes ``bench/results/<part>-<stamp>.json``. This module writes

- ``bench/results/<stamp>.json`` and ``latest.json``: everything, with the machine;
- ``bench/results/latest.md``: the short table it also prints;
- ``docs/reliability/bench.json``: the compact, committed summary the README's reliability
  table shows (``python -m bench.reliability``) — only when the run lost and doubled nothing.

``python -m bench.report [STAMP]`` (default: BENCH_STAMP, else the newest pipeline part).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import describe, one_line
from bench.output import QUICK_NOTE, RECORD, RESULTS

SUMMARY = Path(__file__).resolve().parents[1] / "docs" / "reliability" / "bench.json"
PARTS = ("scorer", "state", "api", "pipeline", "training")


def _load(stamp: str) -> dict[str, dict[str, Any]]:
    parts = {}
    for name in PARTS:
        path = RESULTS / f"{name}-{stamp}.json"
        if path.exists():
            parts[name] = json.loads(path.read_text())
    return parts


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} events/s"


def _times(v: float | None) -> str:
    """A ratio to the trivial agent; n/a where it was not timed (QUICK: one batch held all)."""
    return "n/a" if v is None else f"{v:.1f}×"


def _ms(d: dict[str, Any] | None) -> str:
    if not d or d.get("p50_ms") is None:
        return "n/a"
    return f"p50 {d['p50_ms']:,.1f} ms, p99 {d['p99_ms']:,.1f} ms"


def _scaled_rows(scaled: dict[str, Any] | None, ing: dict[str, Any], e2e: dict[str, Any]
                 ) -> list[tuple[str, str, str]]:
    """POST → scored with one scorer process per core, next to ingest and one process."""
    if not scaled:
        return []
    versus = []
    if ing.get("http_events_per_s"):
        versus.append(f"{scaled['events_per_s'] / ing['http_events_per_s']:.2f}× HTTP ingest")
    if e2e.get("events_per_s"):
        versus.append(f"{scaled['events_per_s'] / e2e['events_per_s']:.2f}× one process")
    return [(f"End to end, POST → scored, {scaled['processes']} scorer processes "
             "(one per core, one group)", _rate(scaled["events_per_s"]), "; ".join(versus))]


def _scorer_refs(s: dict[str, Any], ing: dict[str, Any], e2e: dict[str, Any]) -> list[str]:
    """What POST → scored is next to: the ceilings and the scorer alone, in the same run."""
    ref: list[str] = []
    if "trivial_faust_events_per_s" in s:
        ref.append(f"trivial Faust agent {_rate(s['trivial_faust_events_per_s'])}")
    if s.get("trivial_faust_handover_events_per_s"):
        ref.append("a counter on the scorer's hand-over (its transport's ceiling) "
                   f"{_rate(s['trivial_faust_handover_events_per_s'])}")
    if "bare_consumer_events_per_s" in s:
        ref.append(f"bare aiokafka consumer {_rate(s['bare_consumer_events_per_s'])}")
    if "scorer_events_per_s" in s:
        ref.append(f"scorer alone, from Kafka {_rate(s['scorer_events_per_s'])}")
    if "scorer_envelopes_events_per_s" in s:
        ref.append(f"scorer alone, envelopes {_rate(s['scorer_envelopes_events_per_s'])} "
                   f"({_times(s['scorer_envelopes_vs_trivial_faust'])} trivial Faust)")
    if "scorer_envelopes_distinct_events_per_s" in s:
        ref.append("scorer alone, envelopes, every event another customer "
                   f"{_rate(s['scorer_envelopes_distinct_events_per_s'])} "
                   f"({_times(s['scorer_envelopes_distinct_vs_trivial_faust'])} trivial Faust)")
    if s.get("scorer_envelopes_processes_events_per_s"):
        ref.append(f"{s['scorer_processes']} scorer processes (one per core), envelopes "
                   f"{_rate(s['scorer_envelopes_processes_events_per_s'])} "
                   f"({_times(s['scorer_envelopes_processes_vs_trivial_faust'])} trivial Faust)")
    if ing.get("http_events_per_s"):
        ref.append(f"{e2e['events_per_s'] / ing['http_events_per_s']:.2f}× HTTP ingest")
    return ref


def table(r: dict[str, Any]) -> str:
    s, a, p = r.get("scorer", {}), r.get("api", {}), r.get("pipeline", {})
    st = r.get("state", {})
    ing, e2e, lat = p.get("ingest", {}), p.get("end_to_end", {}), p.get("latency", {})
    once = p.get("exactly_once", {})
    rows: list[tuple[str, str, str]] = []
    if ing:
        rows.append((f"HTTP ingest (`churnwatch api`, batches of {ing['batch']}, {ing['clients']} "
                     "clients)", _rate(ing["http_events_per_s"]),
                     f"bare aiokafka producer (acks=all) {_rate(ing['bare_producer_events_per_s'])}"
                     f" — API at {ing['http_vs_bare_producer']:.0%}"))
    if e2e:
        ref = _scorer_refs(s, ing, e2e)
        rows.append((f"End to end, POST → scored in Redis ({e2e['events']:,} events)",
                     _rate(e2e["events_per_s"]), "; ".join(ref)))
    rows += _scaled_rows(p.get("end_to_end_scaled"), ing, e2e)
    if lat:
        at = f"at {lat['events_per_s']:,} events/s, {lat['probes']:,} probes"
        rows.append(("event → queryable (POST 202 → GET risk 200)",
                     _ms(lat.get("event_to_queryable")), at))
        rows.append(("event → risk change on the topic (POST → record read)",
                     _ms(lat.get("event_to_risk_change")), at))
    for key, label in (("risk_read_idle", "idle"),
                       ("risk_read_ingest_2000_per_s", "while ingesting 2,000 events/s"),
                       ("risk_read_ingest_saturating", "while ingest saturates the API")):
        if key in a:
            during = a[key]["ingest_events_per_s_during"]
            rows.append((f"risk read, {label}", _ms(a[key]["risk_read"]),
                         f"{during:,} events/s ingested meanwhile" if during else "one client"))
    if "at_risk_limit_100" in a:
        rows.append(("at-risk page of 100", _ms(a["at_risk_limit_100"]["all"]),
                     f"{a['customers_in_index']:,} customers in the index"))
    if "console_at_risk_page" in a:
        rows.append(("staff console at-risk page (HTML, 50)", _ms(a["console_at_risk_page"]["all"]),
                     f"{a['customers_in_index']:,} customers in the index"))
    if "notifier_deliveries_per_s" in s:
        rows.append(("notifier → local webhook", f"{s['notifier_deliveries_per_s']:,.0f} deliveries/s",
                     f"{s['notifier_deliveries']:,} deliveries, {s['notifier_duplicates']} duplicates"))
    if "redis_bytes_per_customer" in s:
        by = s.get("redis_bytes_per_customer_by_events", {})
        rows.append(("Redis memory per customer", f"{s['redis_bytes_per_customer']:,.0f} bytes",
                     f"{s['customers']:,} synthetic customers; by events: "
                     + ", ".join(f"{k}: {v:,} B" for k, v in by.items())))
    if st:
        rows.append((f"scorer, customers with {st['history_events']} past events",
                     _rate(st["long_history_events_per_s"]),
                     f"fresh customers {_rate(st['fresh_events_per_s'])} — "
                     f"{st['history_ratio']:.2f}× (same batch spread)"
                     + (f"; first round, a new day for each long customer: "
                        f"{st['history_ratio_first_round']:.2f}×"
                        if "history_ratio_first_round" in st else "")))
        rows.append(("scorer on a 3-primary Redis Cluster", _rate(st["cluster_events_per_s"]),
                     f"{st['cluster_ratio']:.2f}× standalone"))
        if "rescore_customers_per_s" in st:
            rows.append(("re-scoring after a model switch (`model activate`)",
                         f"{st['rescore_customers_per_s']:,.0f} customers/s",
                         f"{st['rescore_customers']:,} stored customers, the scorer process "
                         "switched by the activation record; target ≥ 5,000/s"))
    tr = r.get("training", {})
    if tr:
        rows.append((f"`churnwatch train` on {tr['events']:,} {tr['preset']} events "
                     f"({tr['snapshots']:,} snapshots)",
                     f"{tr['train_seconds']:,.1f} s, {tr['train_events_per_s']:,} events/s",
                     f"target < {tr['target_seconds']:.0f} s; peak RSS "
                     f"{tr['peak_rss_bytes'] / 2**20:,.0f} MiB; load {tr['load_before'][0]:.1f} → "
                     f"{tr['load_after'][0]:.1f}"))
    if once:
        rows.append(("nothing lost, nothing doubled", f"lost {once['lost']}, doubled {once['doubled']}",
                     f"{once['events']:,} posted events each stored and counted exactly once; "
                     "every probe's risk change published once"))
    lines = [f"churnwatch bench {r['stamp']} — {one_line(r['machine'])}", "",
             "| measure | result | next to |", "|---|---|---|"]
    lines += [f"| {m} | {v} | {n} |" for m, v, n in rows]
    return "\n".join(lines) + "\n"


def summary(r: dict[str, Any]) -> dict[str, Any]:
    p = r["pipeline"]
    once, lat = p["exactly_once"], p["latency"]
    return {
        "machine": one_line(r["machine"]), "when": r["when"], "report": f"bench/results/{r['stamp']}.json",
        "ingest_events_per_s": p["ingest"]["http_events_per_s"],
        "bare_producer_events_per_s": p["ingest"]["bare_producer_events_per_s"],
        "end_to_end_events_per_s": p["end_to_end"]["events_per_s"],
        "end_to_end_scaled_events_per_s": (p.get("end_to_end_scaled") or {}).get("events_per_s"),
        "latency_rate_events_per_s": lat["events_per_s"],
        "latency_p50_ms": lat["event_to_queryable"]["p50_ms"],
        "latency_p99_ms": lat["event_to_queryable"]["p99_ms"],
        "risk_change_latency_p99_ms": lat["event_to_risk_change"]["p99_ms"],
        "events": once["events"], "lost": once["lost"], "doubled": once["doubled"],
    }


def main(argv: list[str]) -> int:
    stamp = argv[0] if argv else os.environ.get("BENCH_STAMP")
    if not stamp:
        newest = sorted(RESULTS.glob("pipeline-*.json"))
        if not newest:
            print("no bench results: run `make bench`", file=sys.stderr)
            return 1
        stamp = newest[-1].stem.removeprefix("pipeline-")
    parts = _load(stamp)
    if not parts:
        print(f"no parts of bench run {stamp} in {RESULTS}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {"stamp": stamp, "when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": describe(), **parts}
    text = json.dumps(report, indent=2) + "\n"
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    md = table(report)
    (RESULTS / "latest.md").write_text(md)
    print("\n" + md)
    print(f"report: {RESULTS / f'{stamp}.json'} (latest.json, latest.md"
          + (", latency-latest.png)" if "pipeline" in parts else ")"))
    if "pipeline" not in parts:
        print("no pipeline part: docs/reliability/bench.json left as it was", file=sys.stderr)
        return 1
    once = parts["pipeline"]["exactly_once"]
    if once["lost"] or once["doubled"]:
        print(f"FAIL: {once['lost']} lost, {once['doubled']} doubled: docs/reliability/bench.json "
              "left as it was", file=sys.stderr)
        return 1
    if not RECORD:
        print(f"lost 0, doubled 0; {QUICK_NOTE}")
        return 0
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary(report), indent=2, ensure_ascii=False) + "\n")
    chart = RESULTS / f"latency-{stamp}.png"
    if chart.exists():  # the committed chart the README links to
        (SUMMARY.parent / "latency.png").write_bytes(chart.read_bytes())
    print(f"summary: {SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
