"""End to end: upload to S3, the notification runs the Lambda, rows land in DynamoDB.

Every test uses its own object key, so the file runs in any order and
under ``pytest -n 2``.
"""

from __future__ import annotations

from typing import Any

import pytest

from csv_pipeline_harness.client import Ingestion, PipelineClient
from csv_pipeline_harness.provisioning.samples import sample_csv

pytestmark = [pytest.mark.csv_pipeline_e2e, pytest.mark.csv_pipeline_contract]


def data(result: Ingestion) -> list[dict[str, Any]]:
    """Rows without the partition key, for comparison with expected values."""
    return [{k: v for k, v in row.items() if k != "source"} for row in result.rows]


def assert_complete(result: Ingestion, written: int, rejected: int = 0) -> None:
    m = result.manifest
    assert m["status"] == "COMPLETE", m
    assert (m["rows_written"], m["rows_rejected"]) == (written, rejected), m
    assert "error" not in m and m["finished_at"] >= m["started_at"]


def test_seed_sample_with_blanks(pipeline: PipelineClient, unique_key: str) -> None:
    result = pipeline.ingest(unique_key, sample_csv())
    assert_complete(result, 5)
    assert result.manifest["columns"] == ["name", "age", "email", "city"]
    assert data(result) == [
        {
            "row": 1,
            "name": "Alice Smith",
            "age": "34",
            "email": "alice@example.com",
            "city": "Seattle",
        },
        {"row": 2, "name": "Bob Jones", "age": None, "email": "bob@example.com", "city": None},
        {"row": 3, "name": "Carol White", "age": "29", "email": None, "city": "Denver"},
        {
            "row": 4,
            "name": "David Brown",
            "age": "41",
            "email": "david@example.com",
            "city": "Austin",
        },
        {"row": 5, "name": "Eve Black", "age": None, "email": None, "city": None},
    ]
    assert all(row["source"] == pipeline.source(unique_key) for row in result.rows)


def test_quoted_commas_newlines_and_escaped_quotes(
    pipeline: PipelineClient, unique_key: str
) -> None:
    body = b'id,text\n1,"a, b"\n2,"two\nlines"\n3,"say ""hi"""\n4,"cr\r\nlf"\n'
    result = pipeline.ingest(unique_key, body)
    assert_complete(result, 4)
    assert [r["text"] for r in result.rows] == ["a, b", "two\nlines", 'say "hi"', "cr\r\nlf"]


def test_crlf_line_endings(pipeline: PipelineClient, unique_key: str) -> None:
    result = pipeline.ingest(unique_key, b"a,b\r\n1,\r\n,2\r\n")
    assert_complete(result, 2)
    assert data(result) == [{"row": 1, "a": "1", "b": None}, {"row": 2, "a": None, "b": "2"}]


def test_utf8_bom_and_unicode(pipeline: PipelineClient, unique_key: str) -> None:
    body = "\ufeffnom,ville\nZoë,Zürich\n李,東京 🗼\n".encode()
    result = pipeline.ingest(unique_key, body)
    assert_complete(result, 2)
    assert result.manifest["columns"] == ["nom", "ville"]
    assert data(result) == [
        {"row": 1, "nom": "Zoë", "ville": "Zürich"},
        {"row": 2, "nom": "李", "ville": "東京 🗼"},
    ]


def test_values_are_strings_without_type_guessing(
    pipeline: PipelineClient, unique_key: str
) -> None:
    result = pipeline.ingest(unique_key, b"zip,n,flag\n007,1.50,true\n")
    assert data(result) == [{"row": 1, "zip": "007", "n": "1.50", "flag": "true"}]


@pytest.mark.parametrize(
    "key",
    [
        "with space/my file.csv",
        "plus+sign/a+b.csv",
        "ünïcödé/данные 日本.csv",
        "deep/nested/prefix/a/b/c/data.csv",
        "percent%2Fliteral.csv",
    ],
)
def test_object_keys_are_decoded_exactly(
    pipeline: PipelineClient, key: str, unique_key: str
) -> None:
    full_key = f"{unique_key[:-4]}/{key}"
    result = pipeline.ingest(full_key, b"a\n1\n")
    assert_complete(result, 1)
    assert result.manifest["source"] == f"{pipeline.config.bucket}/{full_key}"
    assert result.rows[0]["source"] == f"{pipeline.config.bucket}/{full_key}"


def test_header_only_file_completes_with_no_rows(pipeline: PipelineClient, unique_key: str) -> None:
    result = pipeline.ingest(unique_key, b"a,b,c\n")
    assert_complete(result, 0)
    assert result.manifest["columns"] == ["a", "b", "c"]
    assert result.rows == []


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b"", "NO_HEADER", "object is empty"),
        (b"name,city\nZo\xeb,Paris\n", "NOT_UTF8", "not valid UTF-8"),
        (b"a,,c\n1,2,3\n", "EMPTY_COLUMN", "empty column name"),
        (b"a,b,a\n1,2,3\n", "DUPLICATE_COLUMN", "duplicate column name"),
        (b"source,x\n1,2\n", "RESERVED_COLUMN", "reserved column name"),
        (b"x,row\n1,2\n", "RESERVED_COLUMN", "reserved column name"),
        (b'a,b\n1,2\n"bad"quote,3\n', "CSV_SYNTAX", "CSV syntax error in record 2"),
        (b"x" * 70_000 + b",b\n1,2\n", "COLUMN_NAME_TOO_LONG", "column 1"),
        (b",".join(b"c%07d" % i for i in range(60_000)) + b"\n", "HEADER_TOO_LARGE", "header"),
    ],
    ids=[
        "empty",
        "latin1",
        "empty-column",
        "duplicate-column",
        "source-column",
        "row-column",
        "syntax",
        "long-column-name",
        "header-too-large",
    ],
)
def test_file_level_failures_are_recorded(
    pipeline: PipelineClient, unique_key: str, body: bytes, code: str, reason: str
) -> None:
    result = pipeline.ingest(unique_key, body)
    assert result.status == "FAILED", result.manifest
    assert result.manifest["error_code"] == code, result.manifest
    assert reason in result.manifest["error"]
    assert result.rows == [], "a FAILED source keeps no data rows"
    assert (result.manifest["rows_written"], result.manifest["rows_rejected"]) == (0, 0)


def test_failed_version_removes_the_previous_versions_rows(
    pipeline: PipelineClient, unique_key: str
) -> None:
    assert_complete(pipeline.ingest(unique_key, b"a\n1\n2\n"), 2)
    result = pipeline.ingest(unique_key, b"a\n1\n\xff\n")
    assert result.status == "FAILED" and result.rows == []
    assert result.manifest["error_code"] == "NOT_UTF8"


def test_row_rejections_are_listed_and_other_rows_written(
    pipeline: PipelineClient, unique_key: str
) -> None:
    big = "x" * 410_000
    body = f"a,b\n1,2\nonly-one\n3,4\n5,6,7\n{big},8\n9,10\n".encode()
    result = pipeline.ingest(unique_key, body)
    assert_complete(result, written=3, rejected=3)
    assert [r["row"] for r in result.rows] == [1, 3, 6]
    rejected = result.manifest["rejected"]
    assert [r["row"] for r in rejected] == [2, 4, 5]
    assert rejected[0]["reason"] == "has 1 fields, header has 2"
    assert "409600-byte limit" in rejected[2]["reason"]


def test_reupload_with_fewer_rows_leaves_exactly_the_new_rows(
    pipeline: PipelineClient, unique_key: str
) -> None:
    first = pipeline.ingest(unique_key, b"a,b\n1,1\n2,2\n3,3\n4,4\n")
    assert_complete(first, 4)
    second = pipeline.ingest(unique_key, b"a,c\nx,\nonly-one-field\n")
    assert_complete(second, written=1, rejected=1)
    assert second.etag != first.etag
    assert data(second) == [{"row": 1, "a": "x", "c": None}]


def test_same_event_delivered_twice_yields_the_same_table(
    pipeline: PipelineClient, unique_key: str
) -> None:
    first = pipeline.ingest(unique_key, b"a\n1\n2\n3\n")
    assert_complete(first, 3)
    response = pipeline.invoke(pipeline.s3_event(unique_key, first.etag))
    payload = response["Payload"]
    assert "FunctionError" not in response, payload
    # The same items, manifest timestamps included: the ETag was not processed again.
    assert pipeline.items(unique_key) == [first.manifest, *first.rows]


def test_progress_is_logged_every_100_records(pipeline: PipelineClient, unique_key: str) -> None:
    since = pipeline.log_mark()
    body = b"n\n" + b"".join(b"%d\n" % i for i in range(250))
    assert_complete(pipeline.ingest(unique_key, body), 250)
    source = pipeline.source(unique_key)
    done = f"Processed 200 records so far ({source})"
    lines = pipeline.wait_for_log(since, done, timeout=10)
    progress = [line for line in lines if "records so far" in line and source in line]
    expected = [f"Processed {n} records so far ({source})" for n in (100, 200)]
    assert len(progress) == 2, lines
    assert all(line.endswith(text) for line, text in zip(progress, expected, strict=True)), lines


def test_objects_without_the_csv_suffix_are_ignored(
    pipeline: PipelineClient, unique_key: str
) -> None:
    key = unique_key[:-4] + ".txt"
    since = pipeline.log_mark()
    pipeline.upload(key, b"a\n1\n")
    # A .csv uploaded after it is the marker: once the invocation for the
    # marker has ended, one for the .txt (announced first) would have too.
    marker = pipeline.ingest(unique_key, b"a\n1\n")
    assert_complete(marker, 1)
    lines = pipeline.wait_for_log(since, f"Finished {pipeline.source(unique_key)}")
    assert pipeline.manifest(key) is None
    assert not any(key in line for line in lines), lines


def test_ten_thousand_rows(pipeline: PipelineClient, unique_key: str) -> None:
    lines = [b"id,name,blank,note"] + [
        b"%d,name-%d,,%s" % (i, i, b'"quoted, %d"' % i if i % 7 == 0 else b"plain")
        for i in range(1, 10_001)
    ]
    result = pipeline.ingest(unique_key, b"\n".join(lines) + b"\n", timeout=180)
    assert_complete(result, 10_000)
    assert len(result.rows) == 10_000
    assert [r["row"] for r in result.rows] == list(range(1, 10_001))
    assert result.rows[6] == {
        "source": pipeline.source(unique_key),
        "row": 7,
        "id": "7",
        "name": "name-7",
        "blank": None,
        "note": "quoted, 7",
    }
    assert all(r["blank"] is None and r["id"] == str(r["row"]) for r in result.rows)


def test_every_record_of_an_event_is_processed(pipeline: PipelineClient, unique_key: str) -> None:
    """A hand-made or redelivered event may carry several records, of any kind."""
    keys = [unique_key[:-4] + suffix for suffix in ("-one.hold", " two ü.hold")]
    etags = [pipeline.upload(key, f"n\n{i}\n".encode()) for i, key in enumerate(keys)]
    records = [pipeline.s3_event(k, e)["Records"][0] for k, e in zip(keys, etags, strict=True)]
    removed = {**records[0], "eventName": "ObjectRemoved:Delete"}
    event = {"Records": [records[0], removed, records[1]]}
    response = pipeline.invoke(event)
    payload = response["Payload"]
    assert "FunctionError" not in response, payload
    for i, key in enumerate(keys):
        assert [row["n"] for row in pipeline.rows(key)] == [str(i)]
