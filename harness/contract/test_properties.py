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
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st

from harness.client import Ingestion, PipelineClient, plain
from harness.contract.oracle import (
    MANIFEST_FIELDS,
    ExpectedState,
    Observed,
    differences,
    expected_state,
)
from harness.contract.strategies import (
    DEFECTS,
    AnyDocument,
    Dialect,
    Document,
    InvalidCase,
    TiledRecords,
    documents,
    object_names,
    revisions,
    tiled_documents,
)

pytestmark = [pytest.mark.e2e, pytest.mark.contract]

#: The active profile's max_examples: 50 in ``dev``, 200 in ``ci``.
BUDGET = settings().max_examples

_deserializer = TypeDeserializer()


def e2e(max_examples: int) -> settings:
    """Settings of an end-to-end property: the active profile's, without a deadline."""
    return settings(max_examples=max_examples, deadline=None)


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


def ingest_and_check(pipeline: PipelineClient, key: str, document: AnyDocument) -> Ingestion:
    """Upload ``document`` as ``key``, wait, and assert the table equals the oracle."""
    note(f"s3 key {key!r}; {document.describe()}")
    since = pipeline.log_mark()
    ingestion = pipeline.ingest(key, document.body)
    expected = expected_state(document, pipeline.source(key))
    assert_state(pipeline, key, expected, ingestion.manifest, ingestion.rows, since)
    return ingestion


# -- 2. any well-formed document ----------------------------------------------


@e2e(BUDGET)
@given(document=documents(max_records=60), name=object_names())
def test_table_equals_the_oracle(pipeline: PipelineClient, document: Document, name: str) -> None:
    count = len(document.records)
    event(f"records: {'0' if count == 0 else '1-25' if count <= 25 else '26+'}")
    ingest_and_check(pipeline, new_key(name), document)


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
def test_reupload_leaves_exactly_the_new_version(
    pipeline: PipelineClient, versions: tuple[AnyDocument, AnyDocument]
) -> None:
    first, second = versions
    key = new_key("replaced")
    ingest_and_check(pipeline, key, first)
    ingest_and_check(pipeline, key, second)


# -- 4. defective documents ----------------------------------------------------


@pytest.mark.parametrize("defect", DEFECTS)
@e2e(max(3, BUDGET // 8))
@given(data=st.data(), name=object_names())
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


@e2e(max(1, BUDGET // 50))
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


@pytest.mark.slow
def test_a_million_rows(pipeline: PipelineClient) -> None:
    document = large_document(1_000_000)
    key = new_key("million")
    since = pipeline.log_mark()
    etag = pipeline.upload(key, document.body)
    manifest = pipeline.wait_for_manifest(key, etag, timeout=1800, since_ms=since)
    expected = expected_state(document, pipeline.source(key))
    rows = read_rows_by_key(pipeline, key, last_row=len(document.records))
    assert_state(pipeline, key, expected, manifest, rows, since)
