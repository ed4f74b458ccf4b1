"""Which invocation may write a source's rows: a lease kept in the manifest item.

Several invocations may want one source at once (redeliveries, retries,
follow-ups, a newer upload). The manifest item is the one place they
coordinate, with conditional writes only:

* :func:`csv_pipeline.versions.decide` says, from the manifest read, whether
  to take the source, wait, preempt an older version or stand aside.
* The lease (``lease_owner``, ``lease_until``) says who writes rows now. Its
  holder renews it as it goes and checks it before every write request, so a
  holder that died simply lets it expire; no lease outlives its invocation.
* A newer version preempts an older one in flight by setting
  ``superseded_by``; the holder's next guarded write fails with
  :class:`Superseded` and it hands the source over.

The request shapes are in :mod:`csv_pipeline.expressions`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from . import expressions as ex
from . import manifest as manifests
from .aws import error_code
from .manifest import Manifest
from .parsing import key_of
from .progress import Checkpoint, Cleanup
from .versions import Decision, Version, decide, newest_sequencer

logger = logging.getLogger("csv_pipeline")

#: Attributes a lease decision depends on; a compare-and-swap checks them all.
DECISION_ATTRIBUTES = (
    "status",
    "etag",
    "sequencer",
    "started_at",
    "finished_at",
    "lease_owner",
    "lease_until",
    "superseded_by",
)

#: How long after an invocation's deadline its lease may still be counted on.
LEASE_GRACE_SECONDS = 2.0


def lease_seconds() -> float:
    """How long a lease lasts without renewal (env ``LEASE_SECONDS``, default 30).

    Also the longest a retry waits for the lease of an invocation that died.
    """
    return max(1.0, float(os.environ.get("LEASE_SECONDS", "30")))


class LeaseLost(RuntimeError):
    """Another invocation owns the source now; this one must stop writing."""


class Superseded(LeaseLost):
    """A newer version of the object is waiting; this one hands the source over."""


class SourceBusy(RuntimeError):
    """The source stayed leased for as long as this invocation could wait.

    Raised so that Lambda's async retry looks again later.
    """


@dataclass(frozen=True)
class Held:
    """The source as the lease holder found it: contract fields and progress."""

    manifest: Manifest
    checkpoint: Checkpoint | None
    cleanup: Cleanup | None
    #: False only while the source has never held another version's rows.
    replacing: bool


@dataclass(frozen=True)
class Claim:
    """What :meth:`Lease.acquire` ended with; ``held`` is set when the lease is ours."""

    decision: Decision
    current: dict[str, Any] | None
    held: Held | None = None


def replacing(current: dict[str, Any] | None, version: Version) -> bool:
    """Whether rows of another version may exist when ``version`` takes ``current`` over.

    Rows are written only under a lease that a manifest records, so a source
    without a manifest holds no row at all; a retry of the same version
    inherits what its first claim found. Anything else may have left rows.
    """
    if current is None:
        return False
    if current.get("etag") == version.etag and "replacing" in current:
        return bool(current["replacing"])
    return True


class Lease:
    """One invocation's hold on one source."""

    def __init__(
        self,
        client: Any,
        table: str,
        source: str,
        version: Version,
        *,
        owner: str | None = None,
        seconds: float | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table = table
        self.source = source
        self.version = version
        self.owner = owner or uuid.uuid4().hex
        self.seconds = seconds or lease_seconds()
        #: Wall-clock time this invocation is killed at: no lease outlives it.
        self.deadline = deadline
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._lock = threading.Lock()
        #: Monotonic time until which a write request may start without renewing.
        self._safe_until = 0.0
        self.held = False

    def read(self) -> dict[str, Any] | None:
        return manifests.read(self.client, self.table, self.source)

    # -- acquiring -------------------------------------------------------------------

    def acquire(self, wait_until: float | None = None, poll: float = 0.25) -> Claim:
        """Take the source, or find out why not.

        Waits (until monotonic ``wait_until``) while another invocation holds
        it. For the same version, a holder seen renewing is alive and will
        finish: the result is WAIT and nothing is written. Raises
        :class:`SourceBusy` when the wait runs out before anything is settled.
        """
        first_seen: tuple[Any, Any] | None = None
        while True:
            current = self.read()
            decision = decide(current, self.version, self.owner, self._clock())
            if decision in (Decision.DONE, Decision.STALE):
                return Claim(decision, current)
            if decision is Decision.OWNED or (decision is Decision.CLAIM and self._claim(current)):
                return self._held(decision, current)
            if decision is Decision.PREEMPT:
                self._preempt(current)
            if decision is Decision.WAIT:
                assert current is not None  # WAIT implies a leased manifest
                lease = (current.get("lease_owner"), current.get("lease_until"))
                if current.get("etag") == self.version.etag:
                    if first_seen and first_seen[0] == lease[0] and first_seen != lease:
                        return Claim(Decision.WAIT, current)  # renewed: its holder is alive
                    if first_seen is None or first_seen[0] != lease[0]:
                        first_seen = lease
                self._wait(wait_until, poll, current)

    def _wait(self, wait_until: float | None, poll: float, current: dict[str, Any]) -> None:
        if wait_until is not None and self._monotonic() + poll > wait_until:
            raise SourceBusy(
                f"{self.source} is still leased by another invocation "
                f"(lease until {current.get('lease_until')})"
            )
        self._sleep(poll)

    def _claim(self, current: dict[str, Any] | None) -> bool:
        """Write a manifest that names this invocation as holder, if nobody moved first."""
        resumable = bool(
            current
            and current.get("etag") == self.version.etag
            and ("checkpoint" in current or "cleanup" in current)
        )
        state = Manifest.from_item(current) if resumable and current else Manifest("", "")
        state.status, state.etag = manifests.PROCESSING, self.version.etag
        state.sequencer = newest_sequencer(current, self.version)
        state.error = state.error_code = state.finished_at = None
        item = state.to_item(self.source)
        item["lease_owner"] = {"S": self.owner}
        item["lease_until"] = ex.attribute_value(self._lease_until())
        item["replacing"] = {"BOOL": replacing(current, self.version)}
        if resumable and current:
            for name in ("checkpoint", "cleanup"):
                if name in current:
                    item[name] = ex.attribute_value(current[name])
        if current is None:
            condition = ex.manifest_absent()
        else:
            condition = ex.holds_values(current, DECISION_ATTRIBUTES)
        return self._guarded(self.client.put_item, ex.put_request(item, condition))

    def _preempt(self, current: dict[str, Any] | None) -> None:
        """Ask the older version in flight to hand over (``superseded_by``)."""
        update = ex.Update({"superseded_by": str(self.version.sequencer)})
        condition = ex.holds_values(current or {}, DECISION_ATTRIBUTES)
        request = ex.update_request(key_of(self.source, 0), update, condition)
        if self._guarded(self.client.update_item, request):
            logger.info(
                "Asked the invocation writing %s (etag %s) to hand over to etag %s",
                self.source,
                (current or {}).get("etag"),
                self.version.etag,
            )

    def _held(self, decision: Decision, current: dict[str, Any] | None) -> Claim:
        started = self._monotonic()
        state = self.read()  # what we wrote (or, for OWNED, what is there)
        if state is None or state.get("lease_owner") != self.owner:
            raise LeaseLost(f"lost {self.source} right after claiming it")
        self.held = True
        self._mark_renewed(started, float(state["lease_until"]) - self._clock())
        held = Held(
            Manifest.from_item(state),
            Checkpoint.from_value(state.get("checkpoint")),
            Cleanup.from_value(state.get("cleanup")),
            replacing=bool(state.get("replacing", True)),
        )
        return Claim(decision, current, held)

    # -- while holding it ------------------------------------------------------------

    def ensure(self) -> None:
        """Raise unless this invocation may still write; renew when half-used.

        Called before every write request, from any thread.
        """
        if self._monotonic() < self._safe_until:
            return
        with self._lock:
            if self._monotonic() < self._safe_until:
                return
            self._record(ex.Update())

    def record(self, update: ex.Update = ex.Update()) -> None:  # noqa: B008 (frozen, empty)
        """Apply ``update`` to the manifest and renew the lease; the holder only.

        Fails with :class:`Superseded` once a newer version is waiting.
        """
        with self._lock:
            self._record(update)

    def _record(self, update: ex.Update) -> None:
        started, now = self._monotonic(), self._clock()
        until = self._lease_until()
        update = update + ex.Update({"lease_until": until})
        condition = ex.owned_by(self.owner) & ex.not_superseded()
        request = ex.update_request(key_of(self.source, 0), update, condition)
        if not self._guarded(self.client.update_item, request):
            self._raise_lost()
        self._mark_renewed(started, until - now)

    def _raise_lost(self) -> None:
        current = self.read() or {}
        if current.get("lease_owner") == self.owner:
            raise Superseded(
                f"{self.source}: a newer version (sequencer {current.get('superseded_by')}) "
                "is waiting"
            )
        self.held = False
        raise LeaseLost(f"{self.source} is now held by another invocation")

    # -- letting go ------------------------------------------------------------------

    def finish(self, final: Manifest) -> bool:
        """Replace the manifest by ``final`` (contract fields only); False if no longer ours."""
        self.held = False
        request = ex.put_request(final.to_item(self.source), ex.owned_by(self.owner))
        return self._guarded(self.client.put_item, request)

    def let_go(self, update: ex.Update = ex.Update()) -> bool:  # noqa: B008 (frozen, empty)
        """Apply ``update``, drop the lease and stop holding; False if no longer ours.

        What progress the manifest records stays, for whoever comes next.
        """
        self.held = False
        update = update + ex.Update(remove=("lease_owner", "lease_until"))
        request = ex.update_request(key_of(self.source, 0), update, ex.owned_by(self.owner))
        return self._guarded(self.client.update_item, request)

    # -- mechanics -------------------------------------------------------------------

    def _guarded(self, write: Callable[..., Any], request: dict[str, Any]) -> bool:
        """One conditional write; False when its condition no longer held."""
        try:
            write(TableName=self.table, **request)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _lease_until(self) -> float:
        until = self._clock() + self.seconds
        if self.deadline is not None:
            until = min(until, self.deadline + LEASE_GRACE_SECONDS)
        return until

    def _mark_renewed(self, started: float, remaining: float) -> None:
        # Requests may start while at least half the lease is left; a request
        # lasts well under that (the write client's timeouts are set from it).
        self._safe_until = started + max(0.0, remaining) / 2
