"""The compiled customer summary (scripts/native.py, mypyc) is the code that runs where it was
built, it is the same code as the pure Python module, and a build from another version of the
source is never run."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import services.scoring.summary as summary
from services.scoring.features import DAY_MS, Activity
from tests.unit.test_summary import BASE, _nows, _stream

SOURCE = Path(summary.__file__).with_name("summary.py")
BUILT = sorted(SOURCE.parent.glob("_summary_native*.so"))


PURE = summary.load_pure()


def test_the_compiled_summary_runs_where_it_can_be_built() -> None:
    """Where a C compiler and mypyc are (``make install`` built it), the scorer, API and
    training run the compiled summary; a build that failed there says so here."""
    if not (shutil.which("cc") or shutil.which("gcc")) or importlib.util.find_spec("mypyc") is None:
        pytest.skip("no C compiler or no mypyc here: the summary runs as pure Python")
    assert BUILT, "no compiled summary: run `make native` and read what it says"
    assert summary.NATIVE, "the compiled summary did not load (out of date after an edit? " \
        "`make native`, or `make test`, which compiles it again)"
    assert summary.Summary.__module__ == summary.NATIVE_MODULE
    assert summary.summarize.__module__ == summary.NATIVE_MODULE
    assert not PURE.NATIVE and PURE.Summary.__module__ == "churnwatch_summary_pure"


def test_a_build_from_another_source_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=summary.__name__)
    assert summary._load_native(SOURCE.read_bytes() + b"\n# edited since the build\n") is None
    if BUILT:
        assert "built from another version" in caplog.text
        assert summary._load_native(SOURCE.read_bytes()) is not None


def _step(mod: ModuleType, blob: str, a: Activity, at: int) -> tuple[str, dict[str, float]]:
    s = mod.Summary.decode(blob)
    s.fold(a)
    feats = s.features(at, BASE - DAY_MS)
    return s.encode(), feats


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_stream(), data=st.data())
def test_compiled_and_pure_give_the_same_bytes_and_features(acts: list[Activity],
                                                            data: st.DataObject) -> None:
    """Step by step as the scorer goes (decode, fold, features, encode): the same blob and the
    same features from both, each reading the other's blobs; then every read of the whole."""
    native = summary if summary.NATIVE else PURE
    blob = PURE.Summary.empty().encode()
    for a in acts:
        at = data.draw(st.sampled_from([a.ts, a.ts + 3 * DAY_MS, a.ts - DAY_MS]))
        mine, feats = _step(native, blob, a, at)
        theirs, their_feats = _step(PURE, blob, a, at)
        assert mine == theirs
        assert feats == their_feats
        blob = mine
    whole, pure_whole = native.summarize(acts), PURE.summarize(acts)
    assert whole.encode() == pure_whole.encode() == blob
    for now in _nows(acts):
        assert whole.features(now, BASE) == pure_whole.features(now, BASE), now
        assert whole.active_days(now) == pure_whole.active_days(now)
        assert whole.last_at_or_before(now) == pure_whole.last_at_or_before(now)
    assert whole.daily() == pure_whole.daily()


@pytest.mark.parametrize("blob", ["", "cw-s2\n", "not a summary", "cw-s2\n1\n2\n3\n4\n5\n6",
                                  '["cw-s2",1,0,0,0,0,null,0,[0],[' + ",".join(["0"] * 40) + '],1]'
                                  "\n\n[]\n[]\n[]\n[]\n"])
def test_both_refuse_the_same_blobs_with_a_value_error(blob: str) -> None:
    for mod in (summary, PURE):
        with pytest.raises(ValueError, match="not an encoded customer summary"):
            mod.Summary.decode(blob)
