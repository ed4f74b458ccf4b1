"""Properties end to end: upload, S3 event, Lambda, DynamoDB; the table must equal the oracle.

Every example uploads under a key of its own (a fresh UUID: function-scoped
fixtures are not reset between Hypothesis examples), waits for the manifest of
exactly that upload's ETag, reads the source back and compares it with
:func:`oracle.expected_state` attribute by attribute. A failure report shows
the shrunk document's CSV text (``note``) and the Lambda's log lines.

No deadline anywhere in this module: each example waits on the emulator (S3
notification, Lambda start, DynamoDB), whose latency is not the code under
test, and :meth:`PipelineClient.wait` already fails with the evidence (last
manifest, Lambda log) when an ingestion does not finish.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import Phase, event, example, given, note, settings
from hypothesis import strategies as st

from csv_pipeline_harness.client import Ingestion, PipelineClient, plain
from csv_pipeline_harness.contract.limits import ITEM_LIMIT_BYTES
from csv_pipeline_harness.contract.oracle import (
    MANIFEST_FIELDS,
    ExpectedState,
    Observed,
    differences,
    expected_state,
    item_size,
)
from csv_pipeline_harness.contract.quirks import (
    HandWritten,
    every_record_quirk,
    hand_written_documents,
    named,
)
from csv_pipeline_harness.contract.shrinking import bounded_shrinking
from csv_pipeline_harness.contract.strategies import (
    BLANK_LINE,
    CSV_READS_NUL,
    DEFECTS,
    AnyDocument,
    Dialect,
    Document,
    EventRecord,
    InvalidCase,
    SizedRows,
    TiledRecords,
    documents,
    event_records,
    object_names,
    record_counts,
    revisions,
    sized_rows,
    tiled_documents,
)

pytestmark = [pytest.mark.csv_pipeline_e2e, pytest.mark.csv_pipeline_contract]

#: The active profile's max_examples: 25 in ``dev``, 200 in ``ci``.
BUDGET = settings().max_examples

_deserializer = TypeDeserializer()


def e2e(max_examples: int, *, drawn: bool = True) -> settings:
    """Settings of an end-to-end property: the active profile's, without a deadline.

    ``drawn=False``: only the pinned ``@example``s run.
    """
    phases = tuple(Phase) if drawn else (Phase.explicit,)
    return settings(max_examples=max_examples, deadline=None, phases=phases)


def new_key(name: str = "document") -> str:
    return f"properties/{uuid.uuid4().hex}/{name}.csv"


def observe(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> Observed:
    """The manifest and rows of a source, in the oracle's terms."""
    return Observed(
        status=manifest.get("status"),
        columns=manifest.get("columns"),
        items=rows,
        rows_written=manifest.get("rows_written"),
        rows_rejected=manifest.get("rows_rejected"),
        rejected=[(r.get("row"), r.get("reason")) for r in manifest.get("rejected", [])],
        error=manifest.get("error"),
        error_code=manifest.get("error_code"),
        rejection_codes=[r.get("code") for r in manifest.get("rejected", [])],
    )


def assert_state(
    pipeline: PipelineClient,
    key: str,
    expected: ExpectedState,
    manifest: dict[str, Any],
    rows: list[dict[str, Any]],
    since_ms: int,
) -> None:
    """Fail with every difference, the manifest and the Lambda's log lines."""
    problems = differences(expected, observe(manifest, rows))
    leftover = set(manifest) - MANIFEST_FIELDS
    if leftover:
        problems.append(f"a final manifest holds bookkeeping attributes {sorted(leftover)}")
    if problems:
        shown = {k: v for k, v in manifest.items() if k != "rejected"}
        raise AssertionError(
            f"s3://{pipeline.config.bucket}/{key}: table state differs from the oracle:\n  "
            + "\n  ".join(problems)
            + f"\nmanifest: {shown}\n"
            + pipeline.format_logs(since_ms)
        )


def ingest_and_check(
    pipeline: PipelineClient, key: str, document: AnyDocument | HandWritten
) -> Ingestion:
    """Upload ``document`` as ``key``, wait, and assert the table equals the oracle."""
    note(f"s3 key {key!r}; {document.describe()}")
    since = pipeline.log_mark()
    ingestion = pipeline.ingest(key, document.body)
    expected = expected_state(document, pipeline.source(key))
    assert_state(pipeline, key, expected, ingestion.manifest, ingestion.rows, since)
    return ingestion


# -- 2. any well-formed document ----------------------------------------------


#: A NUL inside a value, where the csv module reads it (Python 3.11+).
_NUL = "\x00" if CSV_READS_NUL else ""


@e2e(BUDGET)
@example(
    document=Document(
        ("a", "b"),
        TiledRecords((("x", f"lone CR\rin a value{_NUL}"), ("", ""), BLANK_LINE), 39),
        Dialect(endings=("\r", "\n", "\r\n", "\r")),
    ),
    name="mixed",
).via("26 records (one batch and one more) with LF, CRLF and lone CR line endings")
@given(document=documents(counts=record_counts()), name=object_names())
@bounded_shrinking()
def test_table_equals_the_oracle(pipeline: PipelineClient, document: Document, name: str) -> None:
    count = len(document.records)
    batches = "0" if count == 0 else "1-24" if count < 25 else "25" if count == 25 else "26+"
    event(f"records: {batches}")
    event(f"line endings: {'mixed' if document.dialect.endings else 'one'}")
    ingest_and_check(pipeline, new_key(name), document)


# -- 2b. items at the size limit -------------------------------------------------

_LIMIT = ITEM_LIMIT_BYTES


@e2e(max(1, BUDGET // 50))
@example(
    rows=SizedRows(
        ("big", "n"),
        (_LIMIT - 1, _LIMIT, _LIMIT + 1, 200 * 1024, 399 * 1024),
        ("x", "\u20ac", "\U0001f600", "\u00e9", '"'),
        ("7",),
    )
).via("one byte either side of the limit, and accepted items of 200-399 KB")
@example(rows=SizedRows(("big",), tuple(_LIMIT - n for n in range(25)), ("x", "\u00e9", ","))).via(
    "25 items near the limit: one BatchWriteItem of about 10 MB"
)
@example(
    rows=SizedRows(
        ("\u3000_row\u3000",), (412_859,), ('"',), dialect=Dialect(quote_all=True, bom=True)
    )
).via("a 400 KB field of doubled quotes, which Python 3.11.0-3.11.4's possessive regexes misread")
@given(rows=sized_rows(max_records=2))
@bounded_shrinking()
def test_items_are_judged_to_the_byte(pipeline: PipelineClient, rows: SizedRows) -> None:
    """An item of exactly 400 KB is written, one byte more is rejected, as the oracle counts."""
    key = new_key("sized")
    document = rows.document(pipeline.source(key), item_size)
    ingest_and_check(pipeline, key, document)


# -- 2c. hand-written CSV ---------------------------------------------------------


@e2e(max(2, BUDGET // 10))
@example(document=every_record_quirk()).via("every quirk that leaves a record")
@example(
    document=HandWritten(
        named("trailing delimiter: an empty column name"),
        (named("quote inside an unquoted field"), named("text after a closing quote")),
    )
).via("the header's empty column name is reported, not the later syntax error")
@example(
    document=HandWritten(
        named("plain header"),
        (named("empty field"), named("text after a closing quote"), named("one field only")),
        ("\r",),
    )
).via("text after a closing quote, lone CR line endings")
@given(document=hand_written_documents())
@bounded_shrinking()
def test_hand_written_csv_means_what_the_model_says(
    pipeline: PipelineClient, document: HandWritten
) -> None:
    ingest_and_check(pipeline, new_key("typed"), document)


# -- 2d. events of several records ---------------------------------------------------


def count_items(pipeline: PipelineClient, source: str) -> int:
    """How many items (manifest included) the table holds for ``source``."""
    response = pipeline.dynamodb.query(
        TableName=pipeline.config.table,
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "source"},
        ExpressionAttributeValues={":s": {"S": source}},
        Select="COUNT",
        ConsistentRead=True,
    )
    return int(response["Count"])


@e2e(max(3, BUDGET // 10))
@example(
    records=[
        EventRecord("ObjectCreated:Put", True, "first"),
        EventRecord("ObjectRemoved:Delete", True, "removed"),
        EventRecord("ObjectCreated:Post", True, "a+b c%41\u00e9"),
    ]
).via("the second upload of an event is processed too: not only Records[0]")
@given(records=st.lists(event_records(), min_size=1, max_size=5))
@bounded_shrinking()
def test_every_upload_record_of_an_event_is_processed(
    pipeline: PipelineClient, records: list[EventRecord]
) -> None:
    """Each ObjectCreated record of our bucket is processed; no other record is.

    The event is built by hand and the function invoked directly. Keys end in
    ``.held``, which the bucket's notification (suffix ``.csv``) does not
    announce, so only this event can have written their rows; the function
    itself processes whatever key an upload record names. A record of another
    bucket names an object the function cannot read: nothing is written for
    it. Only the table is judged, not the function's return value, which the
    contract leaves open.
    """
    prefix = f"properties/{uuid.uuid4().hex}"
    foreign = f"csv-pipeline-not-ours-{uuid.uuid4().hex[:12]}"
    sources, built = [], []
    for n, record in enumerate(records):
        key = f"{prefix}/{n}-{record.name}.held"
        bucket = pipeline.config.bucket if record.ours else foreign
        etag = pipeline.upload(key, f"n\n{n}\n".encode()) if record.ours else "0" * 32
        sources.append(f"{bucket}/{key}")
        s3_record = pipeline.s3_event(key, etag, bucket=bucket)["Records"][0]
        built.append({**s3_record, "eventName": record.event_name})
    note(f"event records: {built}")
    pipeline.invoke({"Records": built})
    for n, (record, source) in enumerate(zip(records, sources, strict=True)):
        if record.ours and record.is_upload:
            key = source.removeprefix(f"{pipeline.config.bucket}/")
            manifest = pipeline.manifest(key) or {}
            assert manifest.get("status") == "COMPLETE", (record, manifest)
            rows = pipeline.rows(key)
            assert rows == [{"source": source, "row": 1, "n": str(n)}], (record, rows)
        else:
            assert count_items(pipeline, source) == 0, f"{record} was processed"


# -- 3. replacement ------------------------------------------------------------


@e2e(max(10, BUDGET // 2))
@example(
    versions=(
        Document(("a", "b"), (("1", "x"), ("2", "y"), ("3", "z"))),
        Document(("a", "b"), (("1", ""), ("one field",))),
    )
).via("shorter version: row 2 now rejected, row 3 gone")
@example(
    versions=(
        Document(("a", "b"), (("1", "x"), ("2", "y"))),
        Document(("a", "", "a"), (("1", "2", "3"),)),
    )
).via("a FAILED version leaves no rows")
@given(versions=revisions())
@bounded_shrinking()
def test_reupload_leaves_exactly_the_new_version(
    pipeline: PipelineClient, versions: tuple[AnyDocument, AnyDocument]
) -> None:
    first, second = versions
    key = new_key("replaced")
    before = ingest_and_check(pipeline, key, first)
    after = ingest_and_check(pipeline, key, second)
    assert after.etag != before.etag, "the second version must be new bytes, or nothing is tested"


# -- 4. defective documents ----------------------------------------------------


@pytest.mark.parametrize("defect", DEFECTS)
@e2e(max(3, BUDGET // 8))
@given(data=st.data(), name=object_names())
@bounded_shrinking()
def test_defective_documents_get_the_promised_outcome(
    pipeline: PipelineClient, defect: str, data: st.DataObject, name: str
) -> None:
    case: InvalidCase = data.draw(DEFECTS[defect], label="case")
    key = new_key(name)
    assert expected_state(case.document, pipeline.source(key)).keeps(case.promise), (
        f"strategy bug: {case.defect} should be {case.promise} under the contract"
    )
    ingest_and_check(pipeline, key, case.document)


# -- 5. large row counts -------------------------------------------------------

#: Rows that stress what volume stresses: blanks, quoting, CRLF inside cells,
#: multi-byte text, whitespace-only values, rows that are entirely NULL.
_TEMPLATES = (
    ("Ada", "", " padded ", 'say "hi", twice', ""),
    ("", "", "", "", ""),
    ("Zoë", "東京 🗼", "\t", "line one\r\nline two", "007"),
    ("Bob", "", "", "", "1e3"),
    ("x", "a,b,c", "\u2028", "", "   "),
)
_LARGE_HEADER = ("name", "city", " note ", "remark, quoted", "code")


def large_document(count: int) -> Document:
    """``count`` records cycling through :data:`_TEMPLATES`, CRLF, with a BOM."""
    return Document(_LARGE_HEADER, TiledRecords(_TEMPLATES, count), Dialect("\r\n", bom=True), 0)


# The dev profile uploads the pinned example only; ci and thorough draw more.
@e2e(max(1, BUDGET // 50), drawn=BUDGET >= 50)
@example(document=large_document(10_000))
@given(document=tiled_documents(min_records=10_000, max_records=10_000))
def test_ten_thousand_rows(pipeline: PipelineClient, document: Document) -> None:
    ingestion = ingest_and_check(pipeline, new_key("large"), document)
    assert ingestion.manifest["rows_written"] == 10_000


def read_rows_by_key(pipeline: PipelineClient, key: str, last_row: int) -> list[dict[str, Any]]:
    """Rows 1..last_row by key (BatchGetItem), plus whatever lies outside that range.

    The emulator's Query re-reads the whole partition for every 1 MB page, so
    paging through a million rows costs hours; lookups by key cost a constant
    each. Two Query calls (``row < 0``, ``row > last_row``; the manifest is row 0)
    find strays.
    """
    found = pipeline.rows_by_number(key, range(1, last_row + 1))
    for condition, bound in (("#r < :n", 0), ("#r > :n", last_row)):
        response = pipeline.dynamodb.query(
            TableName=pipeline.config.table,
            KeyConditionExpression=f"#s = :s AND {condition}",
            ExpressionAttributeNames={"#s": "source", "#r": "row"},
            ExpressionAttributeValues={":s": {"S": pipeline.source(key)}, ":n": {"N": str(bound)}},
            ConsistentRead=True,
            Limit=10,
        )
        found.extend(
            plain({k: _deserializer.deserialize(v) for k, v in item.items()})
            for item in response.get("Items", [])
        )
    return sorted(found, key=lambda row: row["row"])


@pytest.mark.csv_pipeline_slow
def test_a_million_rows(pipeline: PipelineClient) -> None:
    document = large_document(1_000_000)
    key = new_key("million")
    since = pipeline.log_mark()
    etag = pipeline.upload(key, document.body)
    manifest = pipeline.wait_for_manifest(key, etag, timeout=1800, since_ms=since)
    expected = expected_state(document, pipeline.source(key))
    rows = read_rows_by_key(pipeline, key, last_row=len(document.records))
    assert_state(pipeline, key, expected, manifest, rows, since)
