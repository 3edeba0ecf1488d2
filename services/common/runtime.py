"""Process-wide tuning and stop-signal handling shared by the services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


_paused = 0  # gc_paused blocks open (the scorer's tasks share one thread)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cycle collection inside the block (nested and interleaved blocks of one event loop
    are counted; the collector comes back when the last one ends, if it was on before).

    A scorer batch keeps its customers' summaries, features and replies alive until it ends:
    tens of thousands of young containers, so the collector ran a young collection in about
    every batch, walking all of them to free nothing (refcounting frees them when the batch
    ends). Paused, it never does; Python counts young objects net of the freed ones, so what
    the batch leaves behind, cycles included, is collected as usual afterwards."""
    global _paused
    if _paused == 0 and not gc.isenabled():  # someone else turned it off: leave it off
        yield
        return
    _paused += 1
    gc.disable()
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            gc.enable()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], object],
                    signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
    """Call ``stop`` in ``loop`` on each of ``signals`` for the rest of the process's life
    (from the main thread; the handler runs there).

    Not ``loop.add_signal_handler``: closing the loop (the end of ``asyncio.run``) puts the
    default action back, and a second SIGTERM in the moment after (``make`` forwards one to
    its child when the process group already got the first; a supervisor stops a child the
    group's signal reached too) killed the process mid-shutdown: a CI smoke run found the
    stack dead of SIGTERM with its ``stack.json`` left behind. This handler stays installed;
    once the loop has closed a signal finds shutdown under way and does nothing."""

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: already shutting down
            loop.call_soon_threadsafe(stop)

    for sig in signals:
        signal.signal(sig, handler)


__all__ = ["GC_THRESHOLDS", "STOP_SIGNALS", "gc_paused", "stop_on_signals", "tune_gc"]
