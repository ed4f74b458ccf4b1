"""Which invocation may write a source's rows: a lease kept in the manifest item.

S3 delivers events at least once and in any order, Lambda retries failed
async invocations, and a long file is finished by follow-up invocations — so
several invocations may want the same source at the same time. The manifest
item (``row = 0``) is the one place they coordinate, with conditional writes
only (no locks elsewhere, no extra table):

* **Versions** are ordered by the event ``sequencer`` (S3's rule: right-pad
  the shorter hex string with zeros, then compare). An event older than the
  version the manifest names is stale and does nothing.
* **The lease** (``lease_owner``, ``lease_until``) says who writes rows now.
  Only its holder writes rows; it renews the lease as it goes and checks it
  before every write request, so a holder that died simply lets it expire.
  Every state change is a compare-and-swap on the manifest attributes the
  decision was made from, so two invocations never both win.
* **A newer version preempts** an older one in flight by setting
  ``superseded_by``; the holder sees it at its next checkpoint, waits for its
  own requests in flight, and hands the lease back. The newer version then
  rewrites every row of the source, so the table never mixes two versions.
* **Checkpoints** (``checkpoint``: byte offset, record and line counts, with
  the counters in the manifest's own fields) let a retry or a follow-up
  invocation of the same version resume where the last one stopped.
* **What may be left over** (``rows_high``): no row of an earlier version
  lies above this number, or -1 when that is unknown because a holder of
  another version died while writing. A finishing version deletes the rows
  between its last record and this bound directly; only when it is unknown
  does it query for them.

These attributes live only in a manifest that is in flight (or FAILED and
waiting for a retry): a COMPLETE manifest, and the FAILED one of a file that
can never be ingested, hold exactly the data contract's fields.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from . import manifest as manifests
from .manifest import COMPLETE, FAILED, Manifest
from .parsing import key_of

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


@dataclass
class Checkpoint:
    """Where the next record starts, and how far numbering had got."""

    offset: int = 0
    records: int = 0
    lines: int = 0

    @classmethod
    def from_manifest(cls, current: dict[str, Any] | None) -> Checkpoint | None:
        point = (current or {}).get("checkpoint")
        if not point:
            return None
        return cls(int(point["offset"]), int(point["records"]), int(point["lines"]))


@dataclass(frozen=True)
class Progress:
    """A checkpoint and the manifest's counters up to it."""

    point: Checkpoint
    rows_written: int
    rows_rejected: int
    rejected: list[dict[str, Any]]
    columns: list[str]


@dataclass
class Claim:
    """What :meth:`Lease.acquire` ended with."""

    decision: Decision
    manifest: dict[str, Any] | None
    #: Set when this invocation holds the lease.
    state: Manifest | None = None
    resume_from: Checkpoint | None = None


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
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        #: Monotonic time until which a write request may start without renewing.
        self._safe_until = 0.0
        self.held = False
        #: See ``rows_left_behind``; set when the source is taken.
        self.rows_high = -1
        #: True when an earlier attempt at this same version died mid-write:
        #: its rows stop somewhere before this version's last record, but
        #: where is unknown until this version has written them all again.
        self.own_unknown = False

    # -- reading and compare-and-swap ------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        return manifests.read(self.client, self.table, self.source)

    def _unchanged(
        self, current: dict[str, Any] | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A condition that holds only while the manifest still is ``current``."""
        values: dict[str, Any] = {}
        if current is None:
            return "attribute_not_exists(#pk)", {"#pk": "source"}, values
        names: dict[str, str] = {}
        parts = []
        for i, attribute in enumerate(DECISION_ATTRIBUTES):
            names[f"#d{i}"] = attribute
            if attribute in current:
                values[f":d{i}"] = manifests.serialize(current[attribute])
                parts.append(f"#d{i} = :d{i}")
            else:
                parts.append(f"attribute_not_exists(#d{i})")
        return " AND ".join(parts), names, values

    def _owned(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        return "#lo = :me", {"#lo": "lease_owner"}, {":me": {"S": self.owner}}

    def _lease_until(self) -> float:
        until = self._clock() + self.seconds
        if self.deadline is not None:
            until = min(until, self.deadline + LEASE_GRACE_SECONDS)
        return until

    def _mark_renewed(self, started: float, remaining: float) -> None:
        # Requests may start while at least half the lease is left; a request
        # lasts well under that (the write client's timeouts are set from it).
        self._safe_until = started + max(0.0, remaining) / 2

    # -- acquiring -------------------------------------------------------------------

    def acquire(self, wait_until: float | None = None, poll: float = 0.25) -> Claim:
        """Take the source, or find out why not.

        Waits (until monotonic ``wait_until``) while another invocation holds
        it. For the same version, a holder seen renewing its lease is alive
        and will finish: the result is WAIT and nothing is written. Raises
        :class:`SourceBusy` when the wait runs out before anything is settled.
        """
        seen_lease: tuple[Any, Any] | None = None
        while True:
            current = self.read()
            decision = decide(current, self.version, self.owner, self._clock())
            if decision in (Decision.DONE, Decision.STALE):
                return Claim(decision, current)
            if decision is Decision.OWNED:
                return self._held(decision, current)
            if decision is Decision.CLAIM:
                if self._claim(current):
                    return self._held(decision, current)
                continue
            if decision is Decision.PREEMPT:
                self._preempt(current)
                continue
            assert current is not None  # WAIT implies a manifest with a lease
            lease = (current.get("lease_owner"), current.get("lease_until"))
            if current.get("etag") == self.version.etag:
                if seen_lease is not None and seen_lease[0] == lease[0] and seen_lease != lease:
                    return Claim(Decision.WAIT, current)  # renewed: its holder is alive
                if seen_lease is None or seen_lease[0] != lease[0]:
                    seen_lease = lease
            if wait_until is not None and self._monotonic() + poll > wait_until:
                raise SourceBusy(
                    f"{self.source} is still leased by another invocation "
                    f"(lease until {current.get('lease_until')})"
                )
            self._sleep(poll)

    def _claim(self, current: dict[str, Any] | None) -> bool:
        self.rows_high, self.own_unknown = rows_left_behind(current, self.version)
        resume = None
        if current is not None and current.get("etag") == self.version.etag:
            resume = Checkpoint.from_manifest(current)
        state = Manifest(
            status=manifests.PROCESSING,
            etag=self.version.etag,
            sequencer=self._newest_sequencer(current),
        )
        if resume is not None and current is not None:
            state.rows_written = int(current.get("rows_written", 0))
            state.rows_rejected = int(current.get("rows_rejected", 0))
            state.rejected = list(current.get("rejected", []))
            state.columns = list(current.get("columns", []))
            state.started_at = str(current.get("started_at", state.started_at))
        item = state.to_item(self.source)
        item["lease_owner"] = {"S": self.owner}
        item["lease_until"] = {"N": repr(self._lease_until())}
        item["rows_high"] = {"N": str(self.rows_high)}
        if resume is not None:
            item["checkpoint"] = _checkpoint_value(resume)
        condition, names, values = self._unchanged(current)
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def _newest_sequencer(self, current: dict[str, Any] | None) -> str | None:
        mine, theirs = self.version.sequencer, (current or {}).get("sequencer")
        same = current is not None and current.get("etag") == self.version.etag
        if same and sequencer_order(mine, theirs) == -1:
            return str(theirs)
        return mine

    def _preempt(self, current: dict[str, Any] | None) -> None:
        condition, names, values = self._unchanged(current)
        names["#sb"] = "superseded_by"
        values[":sb"] = {"S": str(self.version.sequencer)}
        try:
            self.client.update_item(
                TableName=self.table,
                Key=key_of(self.source, 0),
                UpdateExpression="SET #sb = :sb",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            logger.info(
                "Asked the invocation writing %s (etag %s) to hand over to etag %s",
                self.source,
                (current or {}).get("etag"),
                self.version.etag,
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def _held(self, decision: Decision, current: dict[str, Any] | None) -> Claim:
        started = self._monotonic()
        state = self.read()  # what we wrote (or, for OWNED, what is there)
        if state is None or state.get("lease_owner") != self.owner:
            raise LeaseLost(f"lost {self.source} right after claiming it")
        self.held = True
        self._mark_renewed(started, float(state["lease_until"]) - self._clock())
        if decision is Decision.OWNED:
            # Our claim went through on an earlier attempt; what it took over is
            # no longer known, so assume the worst about this version's rows.
            self.own_unknown = True
        resume = Checkpoint.from_manifest(state)
        self.rows_high = int(state.get("rows_high", -1))
        return Claim(decision, current, _manifest_from(state), resume)

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
            self._update("SET #lu = :lu", {"#lu": "lease_until"}, {})

    def renew(self) -> None:
        """Extend the lease now (and learn whether a newer version is waiting)."""
        with self._lock:
            self._update("SET #lu = :lu", {"#lu": "lease_until"}, {})

    def checkpoint(self, progress: Progress) -> None:
        """Record progress that is durably written, and renew the lease."""
        expression, names, values = _progress_update(progress)
        with self._lock:
            self._update(f"SET #lu = :lu, {expression}", {"#lu": "lease_until", **names}, values)

    def _update(self, expression: str, names: dict[str, str], values: dict[str, Any]) -> None:
        """A write only the holder may make; fails once a newer version is waiting."""
        started, now = self._monotonic(), self._clock()
        until = self._lease_until()
        condition, own_names, own_values = self._owned()
        try:
            self.client.update_item(
                TableName=self.table,
                Key=key_of(self.source, 0),
                UpdateExpression=expression,
                ConditionExpression=f"{condition} AND attribute_not_exists(#sb)",
                ExpressionAttributeNames={**names, **own_names, "#sb": "superseded_by"},
                ExpressionAttributeValues={
                    **values,
                    **own_values,
                    ":lu": {"N": repr(until)},
                },
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
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

    def finish(self, state: Manifest) -> bool:
        """Write the final manifest (contract fields only); False if no longer ours."""
        condition, names, values = self._owned()
        return self._last_write(
            self.client.put_item,
            TableName=self.table,
            Item=state.to_item(self.source),
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def fail(self, error: str, reached: int, progress: Progress | None = None) -> bool:
        """Record FAILED with ``error``, keeping a checkpoint for the retry.

        ``reached`` is the last record this invocation may have written;
        ``progress``, when given, is a newer checkpoint than the recorded one.
        """
        expression = "SET #st = :failed, #err = :err, finished_at = :now, rows_high = :high"
        names = {"#st": "status", "#err": "error"}
        values = {
            ":failed": {"S": FAILED},
            ":err": {"S": error},
            ":now": {"S": manifests.utc_now()},
            ":high": {"N": str(self.high_after(reached))},
        }
        return self._let_go(*_with_progress(expression, names, values, progress))

    def release(self, reached: int, progress: Progress | None = None) -> bool:
        """Hand the source back (to a newer version or a follow-up invocation).

        With ``progress`` that checkpoint is recorded for the resume.
        """
        expression = "SET rows_high = :high"
        names: dict[str, str] = {}
        values: dict[str, Any] = {":high": {"N": str(self.high_after(reached))}}
        return self._let_go(*_with_progress(expression, names, values, progress))

    def cleanup_bound(self, reached: int) -> int:
        """Highest row that may need deleting once this version stops at ``reached``.

        -1 when unknown. This version's own earlier attempts never wrote past
        the record it stops at, so only earlier versions count.
        """
        return -1 if self.rows_high < 0 else max(self.rows_high, reached)

    def high_after(self, reached: int) -> int:
        """``rows_high`` to leave behind when letting go after record ``reached``."""
        return -1 if self.own_unknown else self.cleanup_bound(reached)

    def _let_go(self, expression: str, names: dict[str, str], values: dict[str, Any]) -> bool:
        """Apply ``expression``, drop the lease attributes, and stop holding."""
        condition, own_names, own_values = self._owned()
        return self._last_write(
            self.client.update_item,
            TableName=self.table,
            Key=key_of(self.source, 0),
            UpdateExpression=f"{expression} REMOVE #lo, #lu",
            ConditionExpression=condition,
            ExpressionAttributeNames={**names, **own_names, "#lu": "lease_until"},
            ExpressionAttributeValues={**values, **own_values},
        )

    def _last_write(self, write: Callable[..., Any], **request: Any) -> bool:
        """This holder's final manifest write; False when the lease was no longer ours."""
        try:
            write(**request)
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            return False
        finally:
            self.held = False
        return True


def rows_left_behind(current: dict[str, Any] | None, version: Version) -> tuple[int, bool]:
    """What may be left of earlier writes when ``version`` takes over ``current``.

    Returns ``(rows_high, own_unknown)``: the highest row an earlier version
    may have left (-1 if unknown), and whether an earlier attempt at this
    same version died mid-write. A COMPLETE version removed everything past
    its last record; a final FAILED one removed all its rows; an in-flight
    manifest carries ``rows_high``. A holder that died (its lease is still
    there) may have written past anything it recorded: for another version
    the bound becomes unknown; for this version it is rewritten row by row.
    """
    if current is None:
        return 0, False
    if "rows_high" not in current:
        if current.get("status") == COMPLETE:
            written = int(current.get("rows_written", 0)) + int(current.get("rows_rejected", 0))
            return written, False
        return 0, False
    high = int(current["rows_high"])
    if current.get("lease_owner") is not None:
        if current.get("etag") == version.etag:
            return high, True
        return -1, False
    return high, False


def _with_progress(
    expression: str,
    names: dict[str, str],
    values: dict[str, Any],
    progress: Progress | None,
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """An update that also records ``progress`` as the checkpoint, when given."""
    if progress is None:
        return expression, names, values
    more, more_names, more_values = _progress_update(progress)
    return f"{expression}, {more}", {**names, **more_names}, {**values, **more_values}


def _progress_update(progress: Progress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The SET clauses that record a checkpoint and the counters up to it."""
    return (
        "#cp = :cp, rows_written = :w, rows_rejected = :r, rejected = :rej, #cols = :cols",
        {"#cp": "checkpoint", "#cols": "columns"},
        {
            ":cp": _checkpoint_value(progress.point),
            ":w": {"N": str(progress.rows_written)},
            ":r": {"N": str(progress.rows_rejected)},
            ":rej": manifests.serialize(progress.rejected),
            ":cols": manifests.serialize(progress.columns),
        },
    )


def _checkpoint_value(point: Checkpoint) -> dict[str, Any]:
    return {
        "M": {
            "offset": {"N": str(point.offset)},
            "records": {"N": str(point.records)},
            "lines": {"N": str(point.lines)},
        }
    }


def _manifest_from(item: dict[str, Any]) -> Manifest:
    return Manifest(
        status=str(item["status"]),
        etag=str(item["etag"]),
        sequencer=item.get("sequencer"),
        rows_written=int(item.get("rows_written", 0)),
        rows_rejected=int(item.get("rows_rejected", 0)),
        rejected=[
            {"row": int(r["row"]), "reason": str(r["reason"])} for r in item.get("rejected", [])
        ],
        columns=[str(c) for c in item.get("columns", [])],
        started_at=str(item["started_at"]),
    )


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")
