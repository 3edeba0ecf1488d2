"""Process-wide tuning the services apply at start (services/common/runtime.py)."""

from __future__ import annotations

import signal
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


STOPPING = """
import asyncio, os, signal, sys
from services.common.runtime import stop_on_signals

async def main():
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop.set)
    print("ready", flush=True)
    await asyncio.wait_for(stop.wait(), 30)  # the test's SIGTERM wakes the idle loop
    print("stopping", flush=True)

asyncio.run(main())
# the loop has closed; a second SIGTERM now (make forwarding the group's signal to its
# child) must find shutdown under way, not the default action
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGINT)
print("shut down", flush=True)
"""


def test_a_second_sigterm_after_the_loop_closed_does_not_kill_the_shutdown() -> None:
    """``loop.add_signal_handler`` puts the default action back when the loop closes: a CI
    smoke run found the stack killed by make's forwarded SIGTERM there, stack.json left."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPING], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["stopping", "shut", "down"]
