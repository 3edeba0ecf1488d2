"""Where the bench and the soak write their results.

``BENCH_RESULTS`` moves ``bench/results/`` elsewhere (``make bench QUICK=1`` and ``make soak
QUICK=1`` write to a temporary directory); ``BENCH_RECORD=0`` leaves the committed summaries
(``docs/reliability/bench.json``, ``soak.json`` and their charts, hence the README's tables)
exactly as they are: a quick run proves the machinery works, it does not measure anything
worth publishing.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results")
RECORD = os.environ.get("BENCH_RECORD", "1").strip().lower() not in ("0", "false", "no")
QUICK_NOTE = "quick run (BENCH_RECORD=0): the committed results in docs/reliability/ are left as they were"
