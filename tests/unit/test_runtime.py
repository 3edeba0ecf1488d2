"""Process-wide tuning the services apply at start (services/common/runtime.py)."""

from __future__ import annotations

import subprocess
import sys

from services.common.runtime import GC_THRESHOLDS


def test_tune_gc_freezes_start_up_objects_and_collects_less_often() -> None:
    code = ("import gc; from services.common.runtime import tune_gc; tune_gc(); "
            "print(gc.get_threshold(), gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == f"{GC_THRESHOLDS} True"


def test_gc_paused_pauses_the_collector_until_the_last_block_ends() -> None:
    """Interleaved blocks (two batches' tasks of one event loop) keep it paused until both
    ended; it comes back on, and a collector someone else turned off stays off."""
    code = """
import asyncio, gc
from services.common.runtime import gc_paused

async def batch(started, release, seen):
    with gc_paused():
        started.set()
        await release.wait()
        seen.append(gc.isenabled())

async def main():
    seen = []
    a_in, b_in, a_go, b_go = (asyncio.Event() for _ in range(4))
    a = asyncio.create_task(batch(a_in, a_go, seen))
    b = asyncio.create_task(batch(b_in, b_go, seen))
    await a_in.wait(); await b_in.wait()
    inside = gc.isenabled()
    a_go.set(); await a
    between = gc.isenabled()
    b_go.set(); await b
    after = gc.isenabled()
    gc.disable()
    with gc_paused():
        pass
    print(inside, seen, between, after, gc.isenabled())

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False [False, False] False True False"


def test_gc_paused_turns_the_collector_back_on_after_an_error() -> None:
    code = ("import gc\nfrom services.common.runtime import gc_paused\n"
            "try:\n    with gc_paused():\n        raise KeyError\nexcept KeyError:\n    pass\n"
            "print(gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "True"
