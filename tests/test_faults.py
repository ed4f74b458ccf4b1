"""Faults: duplicate and reordered deliveries, crashes, timeouts, throttling, S3 errors.

Nothing may be lost, duplicated or mixed. The unit tests pin the pieces
(resume offsets, version ordering, the lease rules); the end-to-end tests
drive the deployed function on the embedded emulator:

* deliveries and races run against the session's stack — the product code;
* injected faults run against a test-only variant of the function, deployed
  under its own names, whose zip adds ``tests/fault_injection.py`` (the
  product zip never contains it) and whose timeout is a few seconds.
"""

from __future__ import annotations

import csv
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from fault_injection import marker_key
from hypothesis import given, settings
from hypothesis import strategies as st

from csv_pipeline.expressions import Update
from csv_pipeline.lease import Lease, SourceBusy, Superseded, replacing
from csv_pipeline.manifest import Manifest
from csv_pipeline.parsing import (
    CsvDocument,
    FileRejected,
    LineReader,
    Record,
    parse_bytes,
)
from csv_pipeline.progress import Checkpoint
from csv_pipeline.versions import Decision, Version, decide, sequencer_order
from csv_pipeline_harness.client import PipelineClient, plain
from csv_pipeline_harness.contract.oracle import MANIFEST_FIELDS
from csv_pipeline_harness.provisioning.backends import Endpoint
from csv_pipeline_harness.stacks import stack_fixture

FAULT_MODULE = Path(__file__).with_name("fault_injection.py")


_deserializer = TypeDeserializer()


# -- files and expectations ------------------------------------------------------------


def varied_csv(rows: int, tag: str) -> bytes:
    """``rows`` records tagged with ``tag``; blanks, quoting, and a ragged row every 997."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "tag", "text", "blank"])
    for i in range(1, rows + 1):
        if i % 997 == 0:
            writer.writerow([i, tag, "one field too many", "", "extra"])
        else:
            text = f"line one\nline two, {i}" if i % 11 == 0 else f'say "{i}"'
            writer.writerow([i, tag, text, ""])
    return out.getvalue().encode("utf-8")


def expected(source: str, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What one clean pass writes: (manifest fields, rows), from the parsing core."""
    columns, outcomes = parse_bytes(body, source)
    rows = [
        plain({k: _deserializer.deserialize(v) for k, v in o.item.items()})
        for o in outcomes
        if isinstance(o, Record)
    ]
    rejected = [
        {"row": o.row, "reason": o.reason, "code": o.code}
        for o in outcomes
        if not isinstance(o, Record)
    ]
    fields = {
        "status": "COMPLETE",
        "rows_written": len(rows),
        "rows_rejected": len(rejected),
        "rejected": rejected[:100],
        "columns": columns,
    }
    return fields, rows


def assert_exactly(
    pipeline: PipelineClient, key: str, body: bytes, etag: str, *, all_rows: bool = True
) -> None:
    """The table holds exactly what one clean pass over ``body`` writes, nothing else."""
    fields, rows = expected(pipeline.source(key), body)
    manifest = pipeline.manifest(key)
    assert manifest is not None
    assert {k: manifest.get(k) for k in fields} == fields, manifest
    assert manifest["etag"] == etag
    assert set(manifest) <= MANIFEST_FIELDS, set(manifest) - MANIFEST_FIELDS
    if all_rows:
        assert pipeline.rows(key) == rows
        return
    # A large file: nothing past the last record, no rejected row, as many rows as
    # written (keys are unique, so that is every other number once), and a sample.
    last = fields["rows_written"] + fields["rows_rejected"]
    assert pipeline.count_rows(key, after=last) == 0
    assert pipeline.rows_by_number(key, [r["row"] for r in fields["rejected"]]) == []
    assert pipeline.count_rows(key, after=0) == fields["rows_written"]
    sample = {r["row"]: r for r in rows[:: max(1, len(rows) // 300)] + rows[-5:]}
    assert pipeline.rows_by_number(key, sorted(sample)) == [sample[n] for n in sorted(sample)]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- unit: resuming from a byte offset -----------------------------------------------------

_text = st.text(alphabet=st.sampled_from(list('ab,"\r\n é日🗼')), max_size=200)

#: The active profile's budget (25 in dev, 200 in ci); these cheap unit
#: properties run a multiple of it.
BUDGET = settings().max_examples


@settings(max_examples=BUDGET * 12, deadline=None)
@given(text=_text, bom=st.booleans(), junk=st.booleans(), chunk=st.integers(1, 9))
def test_line_reader_yields_what_the_text_wrapper_yields(
    text: str, bom: bool, junk: bool, chunk: int
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8") + (b"\xff\n" if junk else b"")
    reader = LineReader(io.BytesIO(data), chunk_size=chunk)
    wrapper = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    if junk:
        with pytest.raises(UnicodeDecodeError):
            list(reader)
        with pytest.raises(UnicodeDecodeError):
            list(wrapper)
        return
    lines = []
    for line in reader:
        lines.append(line)
        assert reader.offset == (3 if bom else 0) + len("".join(lines).encode("utf-8"))
    assert lines == list(wrapper)
    assert reader.offset == len(data)


_cell = st.text(alphabet=st.sampled_from(list('xy ,"\n\ré')), max_size=6)


@settings(max_examples=BUDGET * 8, deadline=None)
@given(
    rows=st.lists(st.lists(_cell, min_size=1, max_size=4), max_size=25),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    blank_every=st.integers(2, 9),
    broken=st.booleans(),
    limit=st.one_of(st.none(), st.integers(1, 24)),
    data=st.data(),
)
def test_resuming_at_any_checkpoint_matches_one_pass(
    rows: list[list[str]],
    newline: str,
    blank_every: int,
    broken: bool,
    limit: int | None,
    data: st.DataObject,
) -> None:
    """Stop after any record, resume from the recorded offset: the same outcomes follow.

    With a low record ``limit``, records over it are read past without being
    held (and rejected): the checkpoint after one of them holds just the same.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(["a", "b", "c"])
    for i, row in enumerate(rows):
        writer.writerow(row)
        if i % blank_every == 0:
            out.write(newline)
    if broken:
        out.write('x"y,1,2' + newline)
    body = out.getvalue().encode("utf-8")

    def outcomes_of(document: CsvDocument) -> tuple[list[Any], str | None]:
        seen: list[Any] = []
        try:
            for outcome in document:
                seen.append(outcome)
        except FileRejected as exc:
            return seen, str(exc)
        return seen, None

    full, full_error = outcomes_of(
        CsvDocument(LineReader(io.BytesIO(body)), "s", record_limit=limit)
    )
    stop = data.draw(st.integers(0, len(full)), label="stop after")
    lines = LineReader(io.BytesIO(body))
    first = CsvDocument(lines, "s", record_limit=limit)
    iterator = iter(first)
    for _ in range(stop):
        next(iterator)
    offset = lines.offset
    resumed_doc = CsvDocument(
        LineReader(io.BytesIO(body[offset:]), offset=offset),
        "s",
        columns=first.columns,
        records_seen=first.records_seen,
        lines_seen=first.lines_seen,
        record_limit=limit,
    )
    resumed, resumed_error = outcomes_of(resumed_doc)
    assert resumed == full[stop:]
    assert resumed_error == full_error


# -- unit: ordering versions and the lease rules --------------------------------------------


def test_sequencers_compare_after_right_padding_with_zeros() -> None:
    assert sequencer_order("0055AED6DCD90281E5", "0055AED6DCD90281E6") == -1
    assert sequencer_order("0055AED6DCD90281E5", "0055AED6DCD90281E5") == 0
    # Different lengths: right-pad the shorter one ("0055B" -> "0055B0000...").
    assert sequencer_order("0055B", "0055AED6DCD90281E5") == 1
    assert sequencer_order("0055a", "0055AED6DCD90281E5") == -1
    assert sequencer_order(None, "01") is None and sequencer_order("01", "") is None


def manifest(
    etag: str = "e1",
    sequencer: str | None = "01",
    status: str = "PROCESSING",
    owner: str | None = None,
    until: float = 0,
    **extra: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {"etag": etag, "status": status, **extra}
    if sequencer:
        item["sequencer"] = sequencer
    if owner:
        item["lease_owner"], item["lease_until"] = owner, until
    return item


@pytest.mark.parametrize(
    ("current", "version", "decision"),
    [
        (None, Version("e1", "01"), Decision.CLAIM),
        (manifest(status="COMPLETE"), Version("e1", "01"), Decision.DONE),
        (manifest(status="COMPLETE"), Version("e1", None), Decision.DONE),
        (manifest(owner="other", until=200), Version("e1", "01"), Decision.WAIT),
        (manifest(owner="other", until=50), Version("e1", "01"), Decision.CLAIM),
        (manifest(owner="me", until=200), Version("e1", "01"), Decision.OWNED),
        (manifest(status="FAILED"), Version("e1", "01"), Decision.CLAIM),
        (manifest(status="COMPLETE", sequencer="05"), Version("e0", "03"), Decision.STALE),
        (manifest(status="COMPLETE", sequencer="03"), Version("e2", "05"), Decision.CLAIM),
        (manifest(owner="other", until=200, sequencer="03"), Version("e2", "05"), Decision.PREEMPT),
        (
            manifest(owner="other", until=200, sequencer="03", superseded_by="05"),
            Version("e2", "05"),
            Decision.WAIT,
        ),
        (
            manifest(owner="other", until=200, sequencer="03", superseded_by="07"),
            Version("e2", "05"),
            Decision.STALE,
        ),
        (manifest(owner="other", until=200, sequencer="05"), Version("e0", "03"), Decision.STALE),
        (manifest(owner="other", until=200, sequencer="03"), Version("e2", None), Decision.WAIT),
    ],
    ids=[
        "no-manifest",
        "complete",
        "complete-unsequenced-event",
        "same-version-live-lease",
        "same-version-expired-lease",
        "our-own-claim",
        "retry-after-failure",
        "older-version",
        "newer-version",
        "newer-version-while-older-in-flight",
        "already-asked-to-hand-over",
        "an-even-newer-one-waits",
        "older-version-while-newer-in-flight",
        "unsequenced-event-waits",
    ],
)
def test_lease_decisions(
    current: dict[str, Any] | None, version: Version, decision: Decision
) -> None:
    assert decide(current, version, "me", now=100.0) is decision


def test_rows_of_another_version_may_exist_unless_the_source_never_had_a_manifest() -> None:
    v1 = Version("e1", "01")
    assert not replacing(None, v1)
    assert replacing(manifest("e0", status="COMPLETE"), v1)
    assert replacing(manifest("e0", owner="x", until=1), v1)
    assert replacing(manifest("e1", status="FAILED"), v1)  # a final FAILED: rows were removed
    assert not replacing(manifest("e1", owner="x", until=1, replacing=False), v1)
    assert replacing(manifest("e1", owner="x", until=1, replacing=True), v1)
    assert replacing(manifest("e0", replacing=False), v1)  # another version's flag


# -- the lease against the emulator's table --------------------------------------------------


def progress(point: Checkpoint) -> Update:
    return Update({"checkpoint": point.as_value(), "rows_written": point.records})


@pytest.fixture
def lease_source(deployed_stack: Any, aws_endpoint: Endpoint) -> Iterator[tuple[Any, str, str]]:
    client = aws_endpoint.client("dynamodb")
    source = f"{deployed_stack.bucket}/leases/{uuid.uuid4().hex}.csv"
    yield client, deployed_stack.table, source
    client.delete_item(
        TableName=deployed_stack.table, Key={"source": {"S": source}, "row": {"N": "0"}}
    )


@pytest.mark.e2e
def test_one_of_many_racing_invocations_takes_the_source(
    lease_source: tuple[Any, str, str],
) -> None:
    client, table, source = lease_source
    version = Version("etag-1", "0000000000000000A1")
    results: list[Any] = []
    lock = threading.Lock()

    def contend() -> None:
        lease = Lease(client, table, source, version, seconds=30)
        try:
            claim = lease.acquire(wait_until=time.monotonic() + 1.5, poll=0.1)
            outcome: Any = (lease, claim.decision if claim.held is None else "held")
        except SourceBusy:
            outcome = (lease, "busy")
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [lease for lease, outcome in results if outcome == "held"]
    assert len(held) == 1, results
    assert all(outcome == "busy" for _, outcome in results if outcome != "held")

    holder = held[0]
    state = Manifest(status="COMPLETE", etag="etag-1", sequencer=version.sequencer)
    assert holder.finish(state)
    again = Lease(client, table, source, version).acquire(wait_until=time.monotonic())
    assert again.decision is Decision.DONE and again.held is None


@pytest.mark.e2e
def test_a_newer_version_takes_over_from_an_older_one_in_flight(
    lease_source: tuple[Any, str, str],
) -> None:
    client, table, source = lease_source
    older = Lease(client, table, source, Version("old", "0000000000000000A1"), seconds=30)
    claim = older.acquire()
    assert claim.held is not None and not claim.held.replacing
    newer = Lease(client, table, source, Version("new", "0000000000000000B2"), seconds=30)
    outcome: dict[str, Any] = {}
    waiting = threading.Thread(
        target=lambda: outcome.update(claim=newer.acquire(wait_until=time.monotonic() + 10))
    )
    waiting.start()
    wait_for(lambda: older.read().get("superseded_by"), 5, "the newer version to ask")  # type: ignore[union-attr]
    with pytest.raises(Superseded):
        older.record(progress(Checkpoint(offset=100, records=25, lines=26)))
    assert not outcome, "the newer version must wait until the older one lets go"
    assert older.let_go()
    waiting.join()
    held = outcome["claim"].held
    assert held is not None and held.manifest.etag == "new"
    assert held.checkpoint is None  # another version's checkpoint means nothing to this one
    assert held.replacing  # the older version's rows past the newer's end get deleted


@pytest.mark.e2e
def test_a_dead_holders_lease_expires_and_is_taken_over(
    lease_source: tuple[Any, str, str],
) -> None:
    client, table, source = lease_source
    version = Version("etag-1", "0000000000000000A1")
    dead = Lease(client, table, source, version, seconds=1)
    claim = dead.acquire()
    assert claim.held is not None
    dead.record(progress(Checkpoint(offset=120, records=30, lines=31)))
    # The holder now "dies": it never renews. A retry of the same version waits for
    # the lease to run out, then resumes from the checkpoint.
    retry = Lease(client, table, source, version, seconds=30)
    started = time.monotonic()
    taken = retry.acquire(wait_until=time.monotonic() + 10, poll=0.1)
    assert taken.held is not None and time.monotonic() - started < 5
    assert taken.held.checkpoint == Checkpoint(offset=120, records=30, lines=31)
    assert taken.held.manifest.rows_written == 30
    with pytest.raises(ClientError):  # and the dead holder can no longer write
        dead.client.update_item(
            TableName=table,
            Key={"source": {"S": source}, "row": {"N": "0"}},
            UpdateExpression="SET #x = :x",
            ConditionExpression="lease_owner = :me",
            ExpressionAttributeNames={"#x": "probe"},
            ExpressionAttributeValues={":x": {"S": "x"}, ":me": {"S": dead.owner}},
        )


# -- end to end: deliveries through the product function --------------------------------------


@pytest.mark.e2e
def test_the_same_event_delivered_twice_at_once_gives_the_table_of_one_delivery(
    pipeline: PipelineClient, unique_key: str
) -> None:
    body = varied_csv(4_000, "twice")
    single = pipeline.ingest(unique_key, body, timeout=180)
    assert single.status == "COMPLETE"

    # Same bytes under a key the bucket's notification ignores, then the event, twice.
    twice_key = unique_key[:-4] + ".twice"
    since = pipeline.log_mark()
    etag = pipeline.upload(twice_key, body)
    event = pipeline.s3_event(twice_key, etag, "0000000000000000A1")
    for _ in range(2):
        pipeline.invoke(event, asynchronous=True)
    source = pipeline.source(twice_key)
    finished = f"Finished {source}:"
    stood_aside = (
        f"{source} (etag {etag}) is being processed by another",
        f"Already processed {source}",
    )

    def ended(line: str) -> bool:
        return finished in line or any(text in line for text in stood_aside)

    lines = pipeline.wait_for_log(since, ended, "both deliveries to end", timeout=180, count=2)
    assert sum(finished in line for line in lines) == 1, "exactly one delivery wrote the rows"

    strip = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert strip(pipeline.rows(twice_key)) == strip(single.rows)
    twice_manifest = pipeline.manifest(twice_key)
    assert twice_manifest is not None and set(twice_manifest) <= MANIFEST_FIELDS
    same = ("status", "rows_written", "rows_rejected", "rejected", "columns", "etag")
    assert {k: twice_manifest[k] for k in same} == {k: single.manifest[k] for k in same}


@pytest.mark.e2e
def test_a_late_event_for_an_overwritten_version_changes_nothing(
    pipeline: PipelineClient, unique_key: str
) -> None:
    old = pipeline.ingest(unique_key, varied_csv(50, "old"))
    new = pipeline.ingest(unique_key, varied_csv(30, "new"))
    before = pipeline.items(unique_key)
    for sequencer in (None, "0000000000000000A1", "FFFFFFFFFFFFFFFFFF"):
        event = pipeline.s3_event(unique_key, old.etag, sequencer)
        payload = pipeline.invoke(event)["Payload"]
        assert payload["results"][0]["status"] == "SUPERSEDED", payload
    assert pipeline.items(unique_key) == before
    assert before[0]["etag"] == new.etag


# -- end to end: injected faults on a test-only variant ----------------------------------------

#: Records read plus rows cleaned up per invocation on the fault stack: files of
#: a few thousand rows need several invocations, however fast the machine is
#: (a slow one reads 500 records in well under the 3 s left by the deadline).
ROWS_PER_INVOCATION = 500


#: The function with ``fault_injection`` wrapped around it (test_dead_letters' too).
FAULT_WRAPPER: dict[str, Any] = {
    "handler": "fault_injection.lambda_handler",
    "extra_files": {"fault_injection.py": FAULT_MODULE},
}

#: What this module's fault stacks share: the wrapper, quiet progress logs.
FAULT_STACK: dict[str, Any] = {**FAULT_WRAPPER, "progress_every": 1000}

#: The wrapped function under its own names, with small budgets. A short
#: timeout keeps the hang test short; ``ROWS_PER_INVOCATION`` makes
#: continuations happen at the same records on every machine.
faulty = stack_fixture(
    prefix="faults",
    **FAULT_STACK,
    timeout_s=5,
    environment={
        "CHECKPOINT_SECONDS": "0.25",
        "LEASE_SECONDS": "3",
        "ROWS_PER_INVOCATION": str(ROWS_PER_INVOCATION),
    },
)


def fault_happened(client: PipelineClient, fault: str, etag: str, key: str) -> bool:
    try:
        client.s3.head_object(Bucket=client.config.bucket, Key=marker_key(fault, etag, key))
    except ClientError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["crash-after-10", "hang-after-10"])
def test_a_lambda_dying_mid_file_is_resumed_by_the_retry(
    faulty: PipelineClient, fault: str
) -> None:
    key = f"faults/{fault}/{uuid.uuid4().hex}.csv"
    body = varied_csv(2_000, fault)
    since = faulty.log_mark()
    etag = faulty.upload(key, body)
    faulty.wait_for_manifest(key, etag, 180)
    assert fault_happened(faulty, fault, etag, key)
    # A log arrives when its invocation has ended, a little after the manifest.
    source = faulty.source(key)
    lines = faulty.wait_for_log(since, f"Finished {source}")
    assert any(f"Resuming {source}" in line for line in lines), "\n".join(lines)
    assert_exactly(faulty, key, body, etag)


@pytest.mark.e2e
def test_a_file_longer_than_one_invocation_is_continued(faulty: PipelineClient) -> None:
    key = f"faults/none/{uuid.uuid4().hex}.csv"
    body = varied_csv(4 * ROWS_PER_INVOCATION, "long")
    since = faulty.log_mark()
    etag = faulty.upload(key, body)
    faulty.wait_for_manifest(key, etag, 180)
    source = faulty.source(key)
    lines = wait_for_chain(faulty, since, source, etag, f"Finished {source}")
    assert sum(f"Starting {source}" in line for line in lines) == 1
    handed_on = [line for line in lines if f"Continuing {source} in a new invocation" in line]
    assert len(handed_on) >= 4, lines[-40:]  # after 500, 1,000, 1,500 and 2,000 records
    assert sum(f"Resuming {source}" in line for line in lines) >= 3
    assert_exactly(faulty, key, body, etag, all_rows=False)


def cleanup_rows_resumed_after(lines: list[str], source: str) -> list[int]:
    prefix = f"Resuming clean-up of {source} after row "
    return [int(line.split(prefix)[1].split()[0]) for line in lines if prefix in line]


def chain_ended(source: str, etag: str, end: str) -> Callable[[list[str]], bool]:
    """Whether the log holds every invocation of one version, start to ``end``.

    Each invocation's lines arrive when it ends, and one that hands on ends
    after its successor has begun, so the last line of a chain can come
    before the lines of the invocation that handed over to it — and a mark
    taken just after an earlier version's manifest still catches that
    version's last lines. The chain is whole once its first invocation is
    in, ``end`` is in, and every point it was handed on at was resumed from.
    """
    name = re.escape(source)
    handed_on = re.compile(
        rf"Continuing {name} in a new invocation after "
        rf"(?:record (\d+) \(byte (\d+)|clean-up row (\d+))"
    )
    resumed = re.compile(
        rf"Resuming (?:{name} \(etag \w+\) after record (\d+), byte (\d+)"
        rf"|clean-up of {name} after row (\d+))"
    )

    def points(pattern: re.Pattern[str], lines: list[str]) -> set[tuple[str, ...]]:
        return {match.groups() for line in lines if (match := pattern.search(line))}

    def whole(lines: list[str]) -> bool:
        started = any(f"Starting {source} (etag {etag}," in line for line in lines)
        ended = any(end in line for line in lines)
        return started and ended and points(handed_on, lines) <= points(resumed, lines)

    return whole


def wait_for_chain(
    client: PipelineClient, since: int, source: str, etag: str, end: str
) -> list[str]:
    """Every log line from ``since`` on, once :func:`chain_ended` holds for them."""
    return client.wait_for_lines(
        since,
        chain_ended(source, etag, end),
        f"every invocation of {source} (etag {etag}) up to {end!r}",
    )


def test_a_chain_is_whole_only_once_every_invocation_of_the_version_is_in() -> None:
    """The lines of a clean-up chain, as they can arrive: the old version's end first."""
    source = "faults/none/f.csv"
    old_end = f"INFO Finished {source}: 1499 rows written, 1 rejected"
    first = [
        f"INFO Starting {source} (etag e2, 230 bytes)",
        f"INFO Continuing {source} in a new invocation after clean-up row 500",
    ]
    second = [
        f"INFO Resuming clean-up of {source} after row 500",
        f"INFO Continuing {source} in a new invocation after clean-up row 1001",
    ]
    last = [
        f"INFO Resuming clean-up of {source} after row 1001",
        f"INFO Finished {source}: 10 rows written, 0 rejected",
    ]
    whole = chain_ended(source, "e2", f"Finished {source}: 10 rows written")
    assert whole([old_end, *first, *last, *second])
    assert not whole([old_end, *first, *last])  # the middle invocation's lines still to come
    assert not whole([old_end, *second, *last])  # the first one's still to come
    assert not whole([old_end, *first, *second])
    assert not whole([old_end, *first, *second, last[0]])  # every hand-on met, no end yet
    records = chain_ended(source, "e2", f"Finished {source}")
    handed = f"INFO Continuing {source} in a new invocation after record 500 (byte 12297 of 38311)"
    resumed = f"INFO Resuming {source} (etag e2) after record 500, byte 12297 of 38311"
    assert records([first[0], handed, resumed, last[1]])
    assert not records([first[0], handed, resumed.replace("12297", "12298"), last[1]])


@pytest.mark.e2e
def test_a_clean_up_longer_than_one_invocation_resumes_where_it_stopped(
    faulty: PipelineClient,
) -> None:
    """A long file replaced by a short one: the stale rows take several invocations."""
    key = f"faults/none/{uuid.uuid4().hex}.csv"
    faulty.ingest(key, varied_csv(3 * ROWS_PER_INVOCATION, "long"), timeout=180)
    since = faulty.log_mark()
    short_rows = 10
    short = varied_csv(short_rows, "short")
    etag = faulty.upload(key, short)
    faulty.wait_for_manifest(key, etag, 180)
    source = faulty.source(key)
    finished = f"Finished {source}: {short_rows} rows written"
    lines = wait_for_chain(faulty, since, source, etag, finished)
    resumed = cleanup_rows_resumed_after(lines, source)
    assert len(resumed) >= 2 and resumed == sorted(set(resumed)), lines[-40:]
    assert resumed[0] >= ROWS_PER_INVOCATION - 10  # the first invocation's deletions held
    assert_exactly(faulty, key, short, etag)


@pytest.mark.e2e
def test_a_file_failing_late_removes_all_its_rows_across_invocations(
    faulty: PipelineClient,
) -> None:
    """Invalid UTF-8 near the end: FAILED, and every row already written is removed."""
    key = f"faults/none/{uuid.uuid4().hex}.csv"
    body = varied_csv(3 * ROWS_PER_INVOCATION, "late") + b"\xff,late,bad byte,\n"
    since = faulty.log_mark()
    etag = faulty.upload(key, body)
    manifest = faulty.wait_for_manifest(key, etag, 180)
    assert manifest["status"] == "FAILED" and manifest["error_code"] == "NOT_UTF8", manifest
    assert (manifest["rows_written"], manifest["rows_rejected"]) == (0, 0)
    assert faulty.rows(key) == []
    source = faulty.source(key)
    lines = wait_for_chain(faulty, since, source, etag, f"Ended {source}: FAILED")
    assert len(cleanup_rows_resumed_after(lines, source)) >= 2, lines[-40:]


@pytest.mark.e2e
def test_an_invocation_that_makes_no_progress_fails_instead_of_handing_on(
    faulty: PipelineClient,
) -> None:
    key = f"faults/writes-never-start/{uuid.uuid4().hex}.csv"
    since = faulty.log_mark()
    etag = faulty.upload(key, varied_csv(100, "stuck"))
    manifest = faulty.wait_for_manifest(key, etag, 60)
    assert manifest["status"] == "FAILED" and manifest["error_code"] == "NO_PROGRESS", manifest
    assert "made no progress" in manifest["error"]
    source = faulty.source(key)
    lines = faulty.wait_for_log(since, f"FAILED {source}")
    assert not [line for line in lines if f"Continuing {source}" in line]


@pytest.mark.e2e
def test_a_file_handed_on_too_often_fails_instead_of_looping(
    faulty: PipelineClient,
) -> None:
    """An event whose hop count is at the maximum may not be handed on again."""
    key = f"faults/none/{uuid.uuid4().hex}.hold"  # not a .csv: no notification
    etag = faulty.upload(key, varied_csv(2 * ROWS_PER_INVOCATION, "hops"))
    event = faulty.s3_event(key, etag, "0000000000000000A1")
    response = faulty.invoke({**event, "continuation": {"hop": 100}})
    assert response.get("FunctionError"), response
    manifest = faulty.manifest(key)
    assert manifest is not None and manifest["status"] == "FAILED", manifest
    assert manifest["error_code"] == "TOO_MANY_CONTINUATIONS", manifest
    below = faulty.invoke({**event, "continuation": {"hop": 99}})
    assert below["Payload"]["results"][0]["status"] == "CONTINUED", below


@pytest.mark.e2e
def test_an_object_deleted_before_it_is_read_is_skipped_even_when_s3_answers_403(
    faulty: PipelineClient,
) -> None:
    """Without ``s3:ListBucket`` AWS answers 403, not 404, for a missing key."""
    key = f"faults/no-listbucket/{uuid.uuid4().hex}.hold"  # not a .csv: no notification
    etag = faulty.upload(key, varied_csv(10, "gone"))
    faulty.s3.delete_object(Bucket=faulty.config.bucket, Key=key)
    since = faulty.log_mark()
    response = faulty.invoke(faulty.s3_event(key, etag, "0A"))
    assert not response.get("FunctionError"), response
    assert response["Payload"]["results"][0]["status"] == "GONE", response
    assert faulty.manifest(key) is None
    lines = faulty.wait_for_log(since, "answers 403")
    assert any(f"Skipping {faulty.source(key)}" in line and "deleted" in line for line in lines)


@pytest.mark.e2e
def test_a_getobject_failure_is_recorded_failed_then_the_retry_succeeds(
    faulty: PipelineClient,
) -> None:
    key = f"faults/getobject/{uuid.uuid4().hex}.csv"
    body = varied_csv(2_000, "get")
    since = faulty.log_mark()
    etag = faulty.upload(key, body)
    faulty.wait_for_manifest(key, etag, 120)
    source = faulty.source(key)
    lines = faulty.wait_for_log(since, f"Finished {source}")
    [failed] = [line for line in lines if f"FAILED {source}:" in line]
    assert "cannot read object" in failed and "InternalError" in failed, failed
    assert fault_happened(faulty, "getobject", etag, key)
    assert_exactly(faulty, key, body, etag)


#: Long enough for a stalled writer to wait out its lease and a newer version's whole file.
stalling = stack_fixture(
    prefix="stall",
    **FAULT_STACK,
    timeout_s=60,
    environment={"CHECKPOINT_SECONDS": "0.25", "LEASE_SECONDS": "3"},
)


@pytest.mark.e2e
def test_a_writer_stalled_past_its_lease_writes_nothing_over_a_newer_version(
    stalling: PipelineClient,
) -> None:
    """Writer A pauses mid-file until its lease has expired and version B has claimed the
    source and completed; when A goes on, its fence (the lease check before every write
    request) must stop it: none of A's later writes may land, the table holds exactly B."""
    key = f"faults/stall-after-5/{uuid.uuid4().hex}.csv"
    old, new = varied_csv(3_000, "old"), varied_csv(40, "new")
    since = stalling.log_mark()
    stalling.upload(key, old)
    # The stall's marker: its log line arrives only once A's invocation ends.
    wait_for(lambda: fault_happened(stalling, "stall-after-5", "", key), 60, "writer A's stall")
    etag = stalling.upload(key, new)
    stalling.wait_for_manifest(key, etag, 120)
    stalling.wait_for_log(since, "FAULT stall-after-5: the stalled invocation ended", timeout=120)
    assert_exactly(stalling, key, new, etag)


@pytest.mark.e2e
def test_an_object_replaced_between_head_and_get_is_not_read_for_the_old_version(
    faulty: PipelineClient,
) -> None:
    """The function checks the version with HEAD, then reads the body: the body read must be of
    that version (``If-Match``), or the new bytes would be written under the old ETag.

    No notification (the key is not a .csv): only the hand-made event of the
    first version runs, so the table shows what that one invocation wrote.
    """
    key = f"faults/replace-before-get/{uuid.uuid4().hex}.hold"
    etag = faulty.upload(key, b"a\noriginal\n")
    response = faulty.invoke(faulty.s3_event(key, etag, "0A"))
    assert not response.get("FunctionError"), response
    assert fault_happened(faulty, "replace-before-get", etag, key)
    rows = faulty.rows(key)
    assert {"source": faulty.source(key), "row": 1, "a": "replaced"} not in rows, (
        "the replacement's bytes were written for the version the event named"
    )
    manifest = faulty.manifest(key)
    assert manifest is None or manifest.get("status") != "COMPLETE" or manifest["etag"] != etag, (
        manifest
    )


@pytest.mark.e2e
def test_throttling_and_unprocessed_items_lose_no_row(faulty: PipelineClient) -> None:
    key = f"faults/throttle/{uuid.uuid4().hex}.csv"
    body = varied_csv(ROWS_PER_INVOCATION - 20, "throttle")  # one invocation, throttled throughout
    since = faulty.log_mark()
    etag = faulty.upload(key, body)
    faulty.wait_for_manifest(key, etag, 180)
    source = faulty.source(key)
    lines = faulty.wait_for_log(since, f"Finished {source}")
    [finished] = [line for line in lines if f"Finished {source}" in line]
    resent = re.search(r"(\d+) requests resent", finished)
    assert resent and int(resent.group(1)) > 0, finished
    assert_exactly(faulty, key, body, etag)


#: The fault function with a lease long enough to outlast a second upload's
#: delivery: the first version waits mid-file, holding the source, until the
#: second one asks it to hand over.
handing_over = stack_fixture(
    prefix="handover",
    **FAULT_STACK,
    timeout_s=60,
    environment={"CHECKPOINT_SECONDS": "0.25", "LEASE_SECONDS": "45"},
)


@pytest.mark.e2e
def test_a_second_upload_during_the_first_wins_and_rows_never_mix(
    handing_over: PipelineClient,
) -> None:
    """The first version is mid-file (it waits there) when the second arrives."""
    pipeline = handing_over
    key = f"faults/wait-for-newer-after-3/{uuid.uuid4().hex}.csv"
    first, second = varied_csv(3_000, "first"), varied_csv(1_000, "second")
    source = pipeline.source(key)
    since = pipeline.log_mark()
    pipeline.upload(key, first)
    # The fault leaves a marker object as it starts waiting (log lines only
    # show once an invocation has ended).
    fault = "wait-for-newer-after-3"
    wait_for(lambda: fault_happened(pipeline, fault, "", key), 60, "the first version to wait")
    in_flight = pipeline.manifest(key)
    assert in_flight is not None and in_flight["status"] == "PROCESSING", in_flight
    second_etag = pipeline.upload(key, second)
    pipeline.wait_for_manifest(key, second_etag, 60)
    # Each invocation's lines arrive when it ends: the second version's may come
    # after its manifest, and either invocation may end first.
    pipeline.wait_for_log(since, f"Finished {source}", timeout=60)
    lines = pipeline.wait_for_log(since, f"Handing {source} over", timeout=60)
    assert any(f"Asked the invocation writing {source}" in line for line in lines), lines[-40:]
    assert not any(f"Finished {source}: 2997" in line for line in lines), lines[-40:]
    assert_exactly(pipeline, key, second, second_etag)
    head = pipeline.s3.head_object(Bucket=pipeline.config.bucket, Key=key)
    assert head["ETag"].strip('"') == second_etag
