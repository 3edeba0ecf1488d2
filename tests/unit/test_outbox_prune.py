"""The development sinks' outbox is pruned (services/cli/sinks.py, prune_outbox)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from services.cli.sinks import prune_outbox


def test_outbox_items_older_than_the_retention_go_and_newer_ones_stay(tmp_path: Path) -> None:
    now = time.time()
    old_iso, new_iso = "2020-01-01T00:00:00.000Z", time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                  time.gmtime(now - 60))
    (tmp_path / "mail").mkdir()
    old_mail, new_mail = tmp_path / "mail" / "old.eml", tmp_path / "mail" / "new.eml"
    old_mail.write_text("old")
    new_mail.write_text("new")
    os.utime(old_mail, (now - 8 * 86_400, now - 8 * 86_400))
    (tmp_path / "mail.log").write_text(f"{old_iso} from=a to=b\n{new_iso} from=c to=d\n")
    (tmp_path / "sms.ndjson").write_text(
        json.dumps({"at": old_iso, "to": "+15550000001"}) + "\n"
        + json.dumps({"at": new_iso, "to": "+15550000002"}) + "\nnot json\n")
    assert prune_outbox(tmp_path, 7 * 86_400, now=now) == 3
    assert not old_mail.exists() and new_mail.exists()
    assert (tmp_path / "mail.log").read_text() == f"{new_iso} from=c to=d\n"
    sms = (tmp_path / "sms.ndjson").read_text()
    assert "+15550000001" not in sms and "+15550000002" in sms and "not json" in sms
    assert prune_outbox(tmp_path, 7 * 86_400, now=now) == 0
