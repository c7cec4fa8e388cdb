"""The trace format: a round trip, and every bad line named with its number and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.replay.trace import (
    EnqueueEvent,
    Header,
    JobEndEvent,
    MachineEvent,
    TraceError,
    parse_lines,
    read_trace,
    write_trace,
)


def test_a_trace_round_trips_sorted_by_time(tmp_path: Path) -> None:
    events = [
        JobEndEvent(12.0, "q", "m1", "done", pool="p", enqueued_at=1.0, started_at=4.0,
                    run_s=8.0, machine_id="abc", launch=1),
        EnqueueEvent(1.0, "q", "m1", {"cpus": 2, "memory_mb": 1024}),
        MachineEvent(2.0, "created", "abc", "app", pool="p", size="shared-cpu-1x"),
    ]
    path = tmp_path / "t.jsonl"
    write_trace(path, Header(0.5, note="hi"), events)
    trace = read_trace(path)
    assert trace.header == Header(0.5, source="record", note="hi")
    assert [type(e).__name__ for e in trace.events] == ["EnqueueEvent", "MachineEvent",
                                                        "JobEndEvent"]
    assert trace.enqueues[0].options == {"cpus": 2, "memory_mb": 1024}
    assert trace.jobs[0] == events[0]
    assert trace.machines[0] == events[2]


def test_the_first_line_is_the_header() -> None:
    with pytest.raises(TraceError, match="line 1: the first line must be the header"):
        parse_lines(['{"type": "enqueue", "t": 1, "queue": "q", "message_id": "m"}'])


def test_a_newer_version_is_refused() -> None:
    line = '{"type": "header", "format": "fly-scaler-trace", "version": 99, "started_at": 0}'
    with pytest.raises(TraceError, match="version is 99; this scaler reads versions 1 to 1"):
        parse_lines([line])


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "line 2: not JSON"),
    ('{"type": "enqueue", "t": "soon", "queue": "q", "message_id": "m"}',
     "line 2: t is 'soon'; expected a number"),
    ('{"type": "enqueue", "t": 1, "queue": "", "message_id": "m"}', "line 2: queue is ''"),
    ('{"type": "machine", "t": 1, "event": "born", "machine_id": "x", "app": "a"}',
     "line 2: event is 'born'; expected one of created, started, gone"),
    ('{"type": "gossip", "t": 1}', "line 2: type is 'gossip'; expected enqueue, job or machine"),
])
def test_a_bad_line_is_named_with_its_field(line: str, message: str) -> None:
    header = '{"type": "header", "format": "fly-scaler-trace", "version": 1, "started_at": 0}'
    with pytest.raises(TraceError, match=message):
        parse_lines([header, line])


def test_an_empty_or_missing_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TraceError, match="empty; a trace starts with its header line"):
        read_trace(tmp_path / "empty.jsonl")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")
