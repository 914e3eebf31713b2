"""The event log rotates: months of events never fill the state directory."""

from __future__ import annotations

import json

from edge_asr.events import KEEP_FILES, EventLog


def test_the_event_log_rotates_and_keeps_a_few_files(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", keep=50, max_file_bytes=2000)
    for i in range(200):
        log.record("m", "unloaded", "ready", "request", n=i)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["events.jsonl", *(f"events.jsonl.{n}" for n in range(1, KEEP_FILES + 1))]
    assert all(f.stat().st_size <= 2000 for f in files)
    newest = [json.loads(line)["n"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    older = [json.loads(line)["n"] for line in (tmp_path / "events.jsonl.1").read_text().splitlines()]
    assert newest[-1] == 199 and older[-1] == newest[0] - 1  # nothing lost between files
    assert [e["n"] for e in log.recent()] == list(range(150, 200))  # memory keeps its own window
