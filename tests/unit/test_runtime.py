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
