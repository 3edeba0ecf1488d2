"""Compile the customer summary (``services/scoring/summary.py``) with mypyc.

Every event the scorer applies goes through :class:`services.scoring.summary.Summary`
(decode, fold, features, encode), and its cost is most of what a customer's history adds to
an event's. Compiled, the same code runs about twice as fast (``bench/summary_speed.py``);
``make install`` runs this script, and without a C compiler (or mypyc) the pure Python module
runs as before.

The compiled module is a copy, ``services.scoring._summary_native``, built from the source with
its SHA-256 inside: ``summary.py`` takes its definitions only when that digest is its own
(:func:`services.scoring.summary._load_native`), so an edit never runs stale compiled code
— it runs as pure Python until this is run again (``make native``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "services" / "scoring" / "summary.py"
COPY = SOURCE.with_name("_summary_native.py")  # generated, compiled, then removed
SETUP = """\
import sys
from mypyc.build import mypycify
from setuptools import setup

source, target = sys.argv.pop(1), sys.argv.pop(1)
setup(name="churnwatch-native", ext_modules=mypycify([source], target_dir=target, opt_level="3"))
"""


def built() -> list[Path]:
    """The compiled module's files (``_summary_native*.so``, its runtime library beside it)."""
    return sorted(SOURCE.parent.glob("_summary_native*.so"))


def main() -> int:
    try:
        import mypyc.build  # noqa: F401  (the dev extra installs it with mypy)
    except ImportError:
        print("native: mypyc is not installed (pip install mypy): the summary stays pure Python",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    for old in built():
        old.unlink()
    COPY.write_bytes(source + f'\n_SOURCE_SHA256 = "{digest}"\n'.encode())
    try:
        with tempfile.TemporaryDirectory(prefix="churnwatch-native-") as tmp:
            setup = Path(tmp) / "setup.py"
            setup.write_text(SETUP)
            run = subprocess.run(
                [sys.executable, str(setup), str(COPY.relative_to(ROOT)), str(Path(tmp) / "c"),
                 "build_ext", "--inplace", "--build-temp", str(Path(tmp) / "temp"),
                 "--build-lib", str(Path(tmp) / "lib")],
                cwd=ROOT, capture_output=True, text=True)
    finally:
        COPY.unlink(missing_ok=True)
    if run.returncode != 0:
        for old in built():
            old.unlink()
        print(run.stdout[-3000:] + run.stderr[-3000:], file=sys.stderr)
        print("native: compiling the summary failed (above): it stays pure Python",
              file=sys.stderr)
        return 1
    check = subprocess.run(
        [sys.executable, "-c", "import services.scoring.summary as s; print(s.NATIVE)"],
        cwd=ROOT, capture_output=True, text=True)
    if check.stdout.strip() != "True":
        print(check.stdout + check.stderr, file=sys.stderr)
        print("native: the compiled summary does not load: it stays pure Python", file=sys.stderr)
        return 1
    print(f"native: compiled services/scoring/summary.py with mypyc in "
          f"{time.monotonic() - started:.0f} s ({', '.join(p.name for p in built())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
