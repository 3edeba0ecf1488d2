"""Where the bench and the soak write their results.

``BENCH_RESULTS`` moves ``bench/results/`` elsewhere (``make bench QUICK=1`` and ``make soak
QUICK=1`` write to a temporary directory); ``BENCH_RECORD=0`` leaves the committed summaries
(``docs/reliability/bench.json``, ``soak.json`` and their charts, hence the README's tables)
exactly as they are: a quick run proves the machinery works, it does not measure anything
worth publishing.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results")
RECORD = os.environ.get("BENCH_RECORD", "1").strip().lower() not in ("0", "false", "no")
QUICK_NOTE = "quick run (BENCH_RECORD=0): the committed results in docs/reliability/ are left as they were"


async def scorer_batch_seconds(metrics_urls: list[str], wait_seconds: float = 0.0) -> float:
    """The scorers' time applying batches so far (``churnwatch_scorer_batch_duration_seconds``
    summed over their ``/metrics`` URLs): it leaves out fetching, the same for every run.
    ``wait_seconds``: how long to wait for a scorer still starting to answer."""
    total = 0.0
    deadline = time.monotonic() + wait_seconds
    async with httpx.AsyncClient(timeout=10) as client:
        for url in metrics_urls:
            while True:
                try:
                    text = (await client.get(url)).text
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            total += sum(float(line.split()[-1]) for line in text.splitlines()
                         if line.startswith("churnwatch_scorer_batch_duration_seconds_sum"))
    return total
