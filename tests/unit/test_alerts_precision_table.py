"""The README's alert precision table is what the alert scenario tests recorded."""

from __future__ import annotations

import json

from tests.precision import END, README, RECORDS_DIR, START, readme_table


def test_readme_precision_table_is_the_rendering_of_the_records() -> None:
    readme = README.read_text()
    assert START in readme and END in readme
    block = readme[readme.index(START):readme.index(END) + len(END)]
    assert block == readme_table(), "README.md's alert precision table is stale or was edited " \
        "by hand: run the alert scenario tests (tests/integration/test_alert_scenarios.py)"


def test_no_scenario_sent_a_duplicate_or_a_stale_alert() -> None:
    rows = [json.loads(p.read_text()) for p in RECORDS_DIR.glob("*.json")]
    assert len(rows) >= 3
    assert all(r["duplicates"] == 0 and r["stale"] == 0 for r in rows), rows
