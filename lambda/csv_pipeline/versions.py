"""Which object version may write a source, decided from the manifest alone.

S3 delivers events at least once and in any order; versions are ordered by
the event ``sequencer`` (S3's rule: right-pad the shorter hex string with
zeros, then compare). :func:`decide` is the whole rule book, a pure function
of the manifest an invocation read, so it is tested without any AWS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .manifest import COMPLETE


def sequencer_order(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as S3 sequencer ``a`` is older, equal or newer than ``b``.

    None when either is unknown (a hand-made event has no sequencer).
    """
    if not a or not b:
        return None
    width = max(len(a), len(b))
    left, right = a.upper().ljust(width, "0"), b.upper().ljust(width, "0")
    return (left > right) - (left < right)


@dataclass(frozen=True)
class Version:
    """One object version as an event names it."""

    etag: str
    sequencer: str | None


class Decision(enum.Enum):
    CLAIM = "claim"  # nobody holds the source: take it
    OWNED = "owned"  # our own claim already went through
    DONE = "done"  # this version is COMPLETE already
    STALE = "stale"  # a newer version is recorded or waiting
    PREEMPT = "preempt"  # an older version is in flight: ask it to stop
    WAIT = "wait"  # someone else holds the source


def decide(current: dict[str, Any] | None, version: Version, owner: str, now: float) -> Decision:
    """What an invocation for ``version`` should do, given the manifest it read."""
    if current is None:
        return Decision.CLAIM
    holder = current.get("lease_owner")
    if holder == owner:
        return Decision.OWNED
    leased = holder is not None and float(current.get("lease_until", 0)) > now
    waiting = current.get("superseded_by")
    if sequencer_order(version.sequencer, waiting) == -1:
        return Decision.STALE
    if current.get("etag") == version.etag:
        if current.get("status") == COMPLETE and not leased:
            return Decision.DONE
        return Decision.WAIT if leased else Decision.CLAIM
    if sequencer_order(version.sequencer, current.get("sequencer")) == -1:
        return Decision.STALE
    if not leased:
        return Decision.CLAIM
    if version.sequencer and waiting != version.sequencer:
        return Decision.PREEMPT
    return Decision.WAIT


def newest_sequencer(current: dict[str, Any] | None, version: Version) -> str | None:
    """The sequencer to record when ``version`` takes ``current`` over.

    A redelivery of the same version may carry an older sequencer than one
    already recorded for it (hand-made events); the newer one is kept.
    """
    recorded = (current or {}).get("sequencer")
    same = current is not None and current.get("etag") == version.etag
    if same and sequencer_order(version.sequencer, recorded) == -1:
        return str(recorded)
    return version.sequencer
