"""The README's reliability table is what the tests and the bench recorded, nothing else."""

from __future__ import annotations

import re

from bench.reliability import DATA, END, README, START, load_records, render
from tests.reliability import ROOT


def test_readme_table_is_the_rendering_of_the_records() -> None:
    readme = README.read_text()
    assert START in readme and END in readme
    block = readme[readme.index(START):readme.index(END) + len(END)]
    assert block == render(), "README.md's reliability table is stale or was edited by hand: " \
        "run `make reliability` (or `python -m bench.reliability`) and commit the result"


def test_every_record_names_a_test_that_exists_and_lost_nothing() -> None:
    rows = load_records(DATA)
    assert rows, "no reliability records: run `make test` once to produce them"
    for row in rows:
        path, _, func = row["test"].partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"def {re.escape(func)}\b", source), f"{row['name']}: {row['test']} is gone"
        assert "record(" in source and row["name"] in source, \
            f"{row['name']}: {path} no longer records this row; delete its file under {DATA}"
        assert row["lost"] == 0 and row["doubled"] == 0, row
