"""The synthetic grammar: what each shape makes, determinism, and errors naming the bad part."""

from __future__ import annotations

import pytest

from scaler.replay.synthetic import SYNTHETIC_EPOCH, SyntheticError, synthesize


def test_a_burst_and_a_steady_rate_make_exact_arrivals() -> None:
    trace = synthesize("burst 5 at 1m queue=b run=20s, steady rate=2/s for 3s", "main")
    enq = trace.enqueues
    assert len(enq) == 11
    burst = [e for e in enq if e.queue == "b"]
    assert [e.t - SYNTHETIC_EPOCH for e in burst] == [60.0] * 5
    steady = [round(e.t - SYNTHETIC_EPOCH, 6) for e in enq if e.queue == "main"]
    assert steady == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    runs = {j.message_id: j.run_s for j in trace.jobs}
    assert all(runs[e.message_id] == 20.0 for e in burst)
    assert all(runs[e.message_id] == 10.0 for e in enq if e.queue == "main")


def test_poisson_arrivals_average_their_rate_and_repeat_with_the_seed() -> None:
    a = synthesize("poisson rate=5/s for 10m run=1s-3s", "q", seed=7)
    b = synthesize("poisson rate=5/s for 10m run=1s-3s", "q", seed=7)
    c = synthesize("poisson rate=5/s for 10m run=1s-3s", "q", seed=8)
    assert a == b
    assert a != c
    n = len(a.enqueues)
    assert 2700 < n < 3300  # 3000 expected; 5.5 standard deviations either side
    assert all(SYNTHETIC_EPOCH <= e.t < SYNTHETIC_EPOCH + 600 for e in a.enqueues)
    assert all(1.0 <= (j.run_s or 0) <= 3.0 for j in a.jobs)


@pytest.mark.parametrize(("spec", "message"), [
    ("", "the spec is empty"),
    ("poisson rate=5/s for 10m,", "empty clause"),
    ("wave rate=1/s for 1m", "unknown shape 'wave'"),
    ("poisson rate=5 for 10m", "rate '5'; write it as N/s, N/m or N/h"),
    ("poisson rate=5/s", "poisson needs 'for DURATION'"),
    ("steady for 1m", "steady needs rate=N/s"),
    ("burst at 5m", "burst needs a count"),
    ("burst 10 at soon", "at 'soon'"),
    ("burst 10 rate=1/s", "a burst takes a count and 'at'"),
    ("poisson rate=1/s for 1m colour=red", "unknown key 'colour'"),
    ("poisson rate=1/s for 1m run=30s-10s", "the range goes low-high"),
    ("poisson rate=1/s for", "'for' needs a duration"),
    ("poisson rate=1/s for 1m banana", "cannot read 'banana'"),
])
def test_a_bad_spec_names_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(SyntheticError, match=message):
        synthesize(spec, "q")
