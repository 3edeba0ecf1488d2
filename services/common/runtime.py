"""Process-wide tuning shared by the services."""

from __future__ import annotations

import gc

# Python's default (700, 10, 10) runs a young collection every 700 allocations and a full
# one every 70,000: the scorer allocates that many in a few batches (summaries, features,
# replies), so full collections walked the model, Faust's and every module's objects again and
# again — a fifth of its CPU per event in the profile. Fifty thousand is still small (a young
# collection stays around a millisecond); cyclic garbage lives a little longer. Measured on the
# scorer's hot path (envelopes, real broker and Redis): (10,000, 20, 50) cost 3-4 % more CPU per
# event than (50,000, 50, 100), and Python's default 15 % more.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Collect what start-up left, move the survivors (modules, the model, settings) out of
    the collector's sight (``gc.freeze``) and collect less often. Calling it again later (the
    scorer does once its processor, producer and connections exist) freezes those too."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


__all__ = ["GC_THRESHOLDS", "tune_gc"]
