"""The in-flight ledger: every machine a create may be making counts against the caps until a
listing shows it (or, long after its create returned, shows it gone)."""

from __future__ import annotations

from scaler.loop.overlay import InFlight, Listed


def _listing(taken_at: float, *names: str) -> dict[str, Listed | None]:
    return {"app": Listed(taken_at, set(names), set())}


def test_a_short_jobs_machine_counts_after_its_claim_ends_until_a_listing_shows_it() -> None:
    # Chaos R6 (full): a `record` job ended its claim within a second of its create, while the
    # scaler reused a listing taken before the create; the machine, still live, counted nowhere
    # and a fifth machine was launched under a cap of 4.
    inflight = InFlight(consistency_grace=2.0)
    (key,) = inflight.reserve("jobs", "app", 100.0, [None])
    assert inflight.count(_listing(99.0), claim_names=()) == {"jobs": 1}  # claim not made yet
    inflight.name(key, "jobs-j1-1")
    assert inflight.count(_listing(99.0), claim_names={"jobs-j1-1"}) == {}  # the claim counts it
    inflight.returned(key, "m1", 101.0)
    assert inflight.count(_listing(99.5), claim_names={"jobs-j1-1"}) == {}
    # the job finished: its claim is gone, the reused listing predates the machine
    assert inflight.count(_listing(99.5), claim_names=()) == {"jobs": 1}
    # a listing taken after the create shows it: the listing counts it from now on
    assert inflight.count(_listing(101.5, "jobs-j1-1"), claim_names=()) == {}
    assert len(inflight) == 0


def test_a_returned_machine_no_later_listing_shows_is_taken_as_gone() -> None:
    inflight = InFlight(consistency_grace=2.0)
    (key,) = inflight.reserve("workers", "app", 10.0, ["w-1"])
    inflight.returned(key, "m1", 11.0)
    assert inflight.count(_listing(12.0), claim_names=()) == {"workers": 1}  # lag: still counts
    assert inflight.count(_listing(13.5), claim_names=()) == {}  # 2 s after: it is gone
    assert len(inflight) == 0


def test_unknown_listings_forget_nothing() -> None:
    inflight = InFlight()
    inflight.reserve("jobs", "app", 1.0, ["a", "b"])
    assert inflight.count({"app": None}, claim_names=()) == {}
    assert len(inflight) == 2
