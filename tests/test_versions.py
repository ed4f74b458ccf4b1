"""The version rule book's edges that the decision table in test_faults.py leaves open.

``versions`` is pure: which object version may write a source follows from
the manifest read alone. These pin the padding of sequencers of different
lengths, the instant a lease ends, a holder with no recorded expiry, and
which sequencer a take-over records.
"""

from __future__ import annotations

from typing import Any

import pytest

from csv_pipeline.versions import Decision, Version, decide, newest_sequencer, sequencer_order


@pytest.mark.parametrize(
    ("a", "b"),
    [("A", "A0"), ("A0", "A"), ("10", "1"), ("1", "10"), ("0055B", "0055B000000000")],
)
def test_a_sequencer_equals_itself_padded_with_zeros_on_the_right(a: str, b: str) -> None:
    # S3's rule: right-pad the shorter with "0". Padding with anything else, or
    # on the left, would order one version against itself.
    assert sequencer_order(a, b) == 0


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("1", "01", 1),  # "10" > "01": the pad goes on the right, not the left
        ("01", "1", -1),
        ("0055B", "0055B1", -1),  # the padded "0055B0" is older than "0055B1"
        ("0055b1", "0055B", 1),  # case does not matter
    ],
)
def test_sequencers_of_different_lengths_order_as_padded(a: str, b: str, order: int) -> None:
    assert sequencer_order(a, b) == order


def held_by(owner: str, **extra: Any) -> dict[str, Any]:
    return {"etag": "e1", "sequencer": "01", "status": "PROCESSING", "lease_owner": owner, **extra}


def test_a_lease_ends_at_its_lease_until() -> None:
    """At the instant ``lease_until`` is reached the lease is over: the source may be claimed."""
    until = 100.0
    assert decide(held_by("other", lease_until=until), Version("e1", "01"), "me", until) is (
        Decision.CLAIM
    )
    just_before = until - 0.001
    assert decide(held_by("other", lease_until=until), Version("e1", "01"), "me", just_before) is (
        Decision.WAIT
    )


@pytest.mark.parametrize("now", [0.5, 100.0])
def test_a_holder_without_an_expiry_holds_nothing(now: float) -> None:
    """A ``lease_owner`` without ``lease_until`` (a manifest written by hand) is no live lease."""
    assert decide(held_by("other"), Version("e1", "01"), "me", now) is Decision.CLAIM
    # Not DONE either: a COMPLETE version with a stale owner is simply done.
    complete = held_by("other", status="COMPLETE")
    assert decide(complete, Version("e1", "01"), "me", now) is Decision.DONE


def test_a_newer_version_claims_from_a_holder_without_an_expiry() -> None:
    current = held_by("other")
    assert decide(current, Version("e2", "02"), "me", 0.5) is Decision.CLAIM


def test_a_take_over_records_the_event_sequencer() -> None:
    assert newest_sequencer(None, Version("e1", "05")) == "05"
    assert newest_sequencer(None, Version("e1", None)) is None
    # Another version: its own sequencer, even an older one (decide rules it STALE first).
    assert newest_sequencer({"etag": "e0", "sequencer": "09"}, Version("e1", "05")) == "05"
    # The same version redelivered with a newer sequencer: the newer one.
    assert newest_sequencer({"etag": "e1", "sequencer": "03"}, Version("e1", "05")) == "05"


def test_a_redelivery_with_an_older_sequencer_keeps_the_recorded_one() -> None:
    current = {"etag": "e1", "sequencer": "09"}
    assert newest_sequencer(current, Version("e1", "05")) == "09"
    # Equal sequencers: the event's own value.
    assert newest_sequencer(current, Version("e1", "09")) == "09"
    assert newest_sequencer({"etag": "e1"}, Version("e1", "05")) == "05"
