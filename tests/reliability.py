"""Records what a fault, fuzz or security test tried and what it lost, for the README's table.

Every test that proves a nothing-lost / nothing-doubled promise calls :func:`record` with the
figures it counted itself, just before it asserts them. Each record is one JSON file under
``docs/reliability/records/`` (one file per record name, so parallel and repeated runs simply
overwrite their own row). ``python -m bench.reliability`` renders those files, and the bench's
``docs/reliability/bench.json`` / ``soak.json``, into the README between its markers; the
README is never edited by hand there (``tests/unit/test_reliability_table.py`` checks).

Only deterministic facts go into the rendered fields (what was sent is fixed by the test's
parameters, lost and doubled must be 0 for the test to pass), so re-running the suite leaves
the committed table unchanged. Timings and other run-to-run figures go into ``measured``,
which is kept in the file but not rendered.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RECORDS_DIR = Path(os.environ.get("CHURNWATCH_RELIABILITY_DIR", ROOT / "docs" / "reliability" / "records"))

Kind = Literal["fault", "fuzz", "security"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{2,60}$")


def record(*, kind: Kind, name: str, tried: str, load: str, checked: str, sent: int, lost: int,
           doubled: int, test: str, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one row of the reliability table.

    kind     "fault" (a process killed, a dependency gone), "fuzz" (hostile input) or "security"
    name     a stable slug, e.g. "api-sigkill-mid-batch" (the file name, the row's identity)
    tried    what was done, in a sentence: "SIGKILL of the API while 8 clients post batches"
    load     the load held, from the test's fixed parameters: "2,000 events in 40 batches of 50"
    checked  what was asserted: "every event of a 202 scored exactly once; resends are no-ops"
    sent     how many events / requests / messages the test sent (fixed by its parameters)
    lost     how many of those that should have arrived did not (counted, must be 0)
    doubled  how many arrived or took effect more than once (counted, must be 0)
    test     the pytest node id, e.g. "tests/faults/test_api_kill.py::test_api_sigkill"
    measured run-to-run figures (seconds, rates, counts that depend on timing); not rendered
    """
    if not _NAME.match(name):
        raise ValueError(f"record name {name!r}: use 3-61 lowercase letters, digits and '-'")
    if kind not in ("fault", "fuzz", "security"):
        raise ValueError(f"record kind {kind!r}: use 'fault', 'fuzz' or 'security'")
    row = {"kind": kind, "name": name, "tried": tried, "load": load, "checked": checked,
           "sent": int(sent), "lost": int(lost), "doubled": int(doubled), "test": test,
           "measured": measured or {}}
    RECORDS_DIR.mkdir(parents=True, exist_ok=True)
    path = RECORDS_DIR / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return row
