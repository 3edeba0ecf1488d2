"""Process-wide tuning shared by the services."""

from __future__ import annotations

import gc

# Python's default (700, 10, 10) runs a young collection every 700 allocations and a full
# one every 70,000: the scorer allocates that many in a few batches (summaries, features,
# replies), so full collections walked the model, Faust's and every module's objects again and
# again — a fifth of its CPU per event in the profile. Ten thousand is still small (a young
# collection stays well under a millisecond); cyclic garbage lives a little longer.
GC_THRESHOLDS = (10_000, 20, 50)


def tune_gc() -> None:
    """Collect what start-up left, move the survivors (modules, the model, settings) out of
    the collector's sight (``gc.freeze``) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


__all__ = ["GC_THRESHOLDS", "tune_gc"]
