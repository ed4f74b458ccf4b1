"""The Lambda's small pure modules, checked without AWS.

``events``, ``progress``, ``expressions``, ``manifest`` and ``settings`` are
otherwise exercised only through the emulator, where a wrong placeholder, a
dropped field or a mis-clamped setting shows up (if at all) as a timeout far
from its cause. Each test here states one rule those modules keep.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from csv_pipeline import settings
from csv_pipeline.events import ObjectRef, continuation_event, hop_of, is_object_created
from csv_pipeline.expressions import (
    Condition,
    Update,
    attribute_value,
    holds_values,
    manifest_absent,
    not_superseded,
    owned_by,
    put_request,
    update_request,
)
from csv_pipeline.manifest import MAX_LISTED_REJECTIONS, Manifest, read, utc_now
from csv_pipeline.progress import Checkpoint, Cleanup, Position

# -- events ------------------------------------------------------------------------------------


def s3_record(
    key: str, etag: str | None = '"abc"', sequencer: str | None = "0A1"
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key}
    if etag is not None:
        obj["eTag"] = etag
    if sequencer is not None:
        obj["sequencer"] = sequencer
    return {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": obj}}


def test_an_event_key_is_url_decoded_and_the_etag_unquoted() -> None:
    record = s3_record("dir/My+File%C3%A9+%2B1.csv")
    ref = ObjectRef.from_record(record)
    assert ref == ObjectRef("b", "dir/My Fileé +1.csv", "abc", "0A1")
    assert ref.source == "b/dir/My Fileé +1.csv"
    assert ref.record is record


@pytest.mark.parametrize("etag", [None, "", '""'])
def test_an_event_without_an_etag_names_none(etag: str | None) -> None:
    ref = ObjectRef.from_record(s3_record("k.csv", etag=etag, sequencer=None))
    assert ref.etag is None and ref.sequencer is None


@pytest.mark.parametrize(
    ("name", "created"),
    [
        ("ObjectCreated:Put", True),
        ("ObjectCreated:CompleteMultipartUpload", True),
        ("ObjectRemoved:Delete", False),
        ("s3:ObjectCreated:Put", False),
        (None, False),
    ],
)
def test_only_object_created_records_are_processed(name: str | None, created: bool) -> None:
    record = {} if name is None else {"eventName": name}
    assert is_object_created(record) is created


def test_a_continuation_carries_the_same_record_and_counts_hops() -> None:
    record = s3_record("k.csv")
    assert hop_of({"Records": [record]}) == 0
    assert hop_of({"Records": [record], "continuation": None}) == 0
    assert hop_of({"Records": [record], "continuation": {}}) == 0
    event = continuation_event(ObjectRef.from_record(record), 3)
    assert event == {"Records": [record], "continuation": {"hop": 3}}
    assert hop_of(event) == 3
    assert hop_of({"continuation": {"hop": "7"}}) == 7  # a number that travelled as text


# -- progress ----------------------------------------------------------------------------------


def test_a_checkpoint_round_trips_through_its_manifest_value() -> None:
    point = Checkpoint(offset=1234, records=56, lines=78)
    assert point.as_value() == {"offset": 1234, "records": 56, "lines": 78}
    # DynamoDB hands numbers back as Decimal (or text): read as ints.
    assert Checkpoint.from_value({"offset": "1234", "records": 56.0, "lines": 78}) == point
    assert Checkpoint.from_value(None) is None and Checkpoint.from_value({}) is None
    assert Checkpoint() == Checkpoint(0, 0, 0)


def test_a_cleanup_records_its_error_only_when_there_is_one() -> None:
    done = Cleanup(keep=5, status="COMPLETE", cursor=7)
    assert done.as_value() == {"keep": 5, "status": "COMPLETE", "cursor": 7}
    assert Cleanup.from_value(done.as_value()) == done
    failed = Cleanup(0, "FAILED", 3, "bad quoting", "CSV_SYNTAX")
    assert failed.as_value() == {
        "keep": 0,
        "status": "FAILED",
        "cursor": 3,
        "error": "bad quoting",
        "error_code": "CSV_SYNTAX",
    }
    assert Cleanup.from_value({**failed.as_value(), "keep": "0", "cursor": "3"}) == failed
    assert Cleanup.from_value(None) is None and Cleanup.from_value({}) is None


def test_a_position_tells_reading_from_cleaning_up() -> None:
    assert Position.of(None, None) == Position(offset=0, cleaning=False, cursor=-1)
    reading = Position.of(Checkpoint(100, 2, 3), None)
    assert reading == Position(100, False, -1)
    cleaning = Position.of(Checkpoint(100, 2, 3), Cleanup(2, "COMPLETE", 2))
    assert cleaning == Position(100, True, 2)
    # Clean-up that has not moved its cursor yet is still a different position from reading.
    assert cleaning != reading
    assert Position.of(None, Cleanup(0, "FAILED", 0)) == Position(0, True, 0)


# -- expressions -------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


def placeholders(*expressions: str) -> set[str]:
    return {p for e in expressions for p in PLACEHOLDER.findall(e)}


def assert_placeholders_match(request: dict[str, Any]) -> None:
    """DynamoDB refuses a request whose placeholders are undefined or defined but unused."""
    used = placeholders(request.get("UpdateExpression", ""), request["ConditionExpression"])
    defined = set(request["ExpressionAttributeNames"]) | set(
        request.get("ExpressionAttributeValues", {})
    )
    assert used == defined, request
    assert request.get("ExpressionAttributeValues") != {}, "an empty map is refused"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, {"N": "1.5"}),
        (1234567.125, {"N": "1234567.125"}),
        (3, {"N": "3"}),
        ("x", {"S": "x"}),
        (None, {"NULL": True}),
        ({"a": 1}, {"M": {"a": {"N": "1"}}}),
        ([1, "b"], {"L": [{"N": "1"}, {"S": "b"}]}),
    ],
)
def test_attribute_values_are_low_level_dynamodb_values(value: Any, expected: Any) -> None:
    assert attribute_value(value) == expected


def test_a_lease_time_keeps_its_fraction_of_a_second() -> None:
    # boto3's serializer refuses floats; lease times are floats.
    until = 1_700_000_000.123456
    assert float(attribute_value(until)["N"]) == until


def test_conditions_combine_with_and_keeping_every_placeholder() -> None:
    both = owned_by("me") & not_superseded()
    assert both.expression == "(#owner = :owner) AND (attribute_not_exists(#superseded))"
    assert both.names == {"#owner": "lease_owner", "#superseded": "superseded_by"}
    assert both.values == {":owner": {"S": "me"}}
    assert manifest_absent() == Condition("attribute_not_exists(#pk)", {"#pk": "source"})


def test_holds_values_compares_present_attributes_and_requires_absent_ones_absent() -> None:
    condition = holds_values(
        {"lease_owner": "x", "lease_until": 12.5}, ("lease_owner", "superseded_by", "lease_until")
    )
    assert condition.expression == ("#c0 = :c0 AND attribute_not_exists(#c1) AND #c2 = :c2")
    assert condition.names == {"#c0": "lease_owner", "#c1": "superseded_by", "#c2": "lease_until"}
    assert condition.values == {":c0": {"S": "x"}, ":c2": {"N": "12.5"}}


def test_updates_add_up_later_values_winning() -> None:
    total = Update({"a": 1, "b": 2}, ("x",)) + Update({"b": 3}, ("y",))
    assert total == Update({"a": 1, "b": 3}, ("x", "y"))


KEY = {"source": {"S": "b/k.csv"}, "row": {"N": "0"}}


def test_an_update_request_sets_and_removes_with_its_condition() -> None:
    condition = owned_by("me")
    request = update_request(
        KEY, Update({"status": "COMPLETE", "n": 2}, ("lease_owner",)), condition
    )
    assert request == {
        "Key": KEY,
        "UpdateExpression": "SET #u0 = :u0, #u1 = :u1 REMOVE #r0",
        "ConditionExpression": "#owner = :owner",
        "ExpressionAttributeNames": {
            "#owner": "lease_owner",
            "#u0": "status",
            "#u1": "n",
            "#r0": "lease_owner",
        },
        "ExpressionAttributeValues": {
            ":owner": {"S": "me"},
            ":u0": {"S": "COMPLETE"},
            ":u1": {"N": "2"},
        },
    }
    assert_placeholders_match(request)
    # The condition's own maps are not changed by building a request.
    assert condition.names == {"#owner": "lease_owner"}


def test_a_remove_only_update_has_no_set_clause_and_no_values() -> None:
    request = update_request(KEY, Update(remove=("a", "b")), not_superseded())
    assert request["UpdateExpression"] == "REMOVE #r0, #r1"
    assert "ExpressionAttributeValues" not in request
    assert_placeholders_match(request)


def test_a_set_only_update_has_no_remove_clause() -> None:
    request = update_request(KEY, Update({"a": "x"}), manifest_absent())
    assert request["UpdateExpression"] == "SET #u0 = :u0"
    assert_placeholders_match(request)


def test_a_put_request_carries_the_condition_values_only_when_there_are_some() -> None:
    item = {**KEY, "status": {"S": "PROCESSING"}}
    request = put_request(item, manifest_absent())
    assert request == {
        "Item": item,
        "ConditionExpression": "attribute_not_exists(#pk)",
        "ExpressionAttributeNames": {"#pk": "source"},
    }
    guarded = put_request(item, holds_values({"etag": "e1"}, ("etag",)))
    assert guarded["ExpressionAttributeValues"] == {":c0": {"S": "e1"}}
    assert guarded["ExpressionAttributeNames"] == {"#c0": "etag"}
    assert_placeholders_match(guarded)


# -- manifest ----------------------------------------------------------------------------------


def test_every_rejection_is_counted_and_the_first_hundred_listed() -> None:
    manifest = Manifest(status="PROCESSING", etag="e")
    for row in range(1, MAX_LISTED_REJECTIONS + 3):
        manifest.reject(row, f"reason {row}", "FIELD_COUNT")
    assert manifest.rows_rejected == MAX_LISTED_REJECTIONS + 2
    assert len(manifest.rejected) == MAX_LISTED_REJECTIONS
    assert manifest.rejected[0] == {"row": 1, "reason": "reason 1", "code": "FIELD_COUNT"}
    assert manifest.rejected[-1]["row"] == MAX_LISTED_REJECTIONS


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def test_a_manifest_item_holds_the_contract_fields_and_omits_unset_ones() -> None:
    manifest = Manifest(status="COMPLETE", etag="e", started_at="t0", columns=["a"])
    manifest.rows_written = 2
    item = manifest.to_item("b/k.csv")
    assert item["source"] == {"S": "b/k.csv"} and item["row"] == {"N": "0"}
    assert plain_item(item) == {
        "source": "b/k.csv",
        "row": 0,
        "status": "COMPLETE",
        "etag": "e",
        "started_at": "t0",
        "rows_written": 2,
        "rows_rejected": 0,
        "rejected": [],
        "columns": ["a"],
    }


def test_a_manifest_round_trips_through_its_item() -> None:
    manifest = Manifest(
        status="FAILED",
        etag="e",
        sequencer="0A",
        rows_written=3,
        columns=["a", "b"],
        error="bad",
        error_code="CSV_SYNTAX",
        started_at="t0",
        finished_at="t1",
    )
    manifest.reject(2, "too many fields", "FIELD_COUNT")
    item = plain_item(manifest.to_item("b/k.csv"))
    assert item["finished_at"] == "t1" and item["sequencer"] == "0A"
    back = Manifest.from_item({**item, "lease_owner": "x", "checkpoint": {"offset": 1}})
    # Everything but finished_at, which a manifest read back does not carry over.
    assert back == Manifest(**{**manifest.__dict__, "finished_at": None})


def test_a_manifest_read_with_missing_fields_gets_the_defaults() -> None:
    back = Manifest.from_item({"status": "PROCESSING", "etag": "e"})
    assert (back.rows_written, back.rows_rejected, back.rejected, back.columns) == (0, 0, [], [])
    assert back.sequencer is None and back.error is None and back.error_code is None
    started = datetime.fromisoformat(back.started_at)
    assert abs(started - datetime.now(timezone.utc)) < timedelta(seconds=60)


def test_timestamps_are_utc_iso_8601_with_milliseconds() -> None:
    stamp = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), stamp


class Table:
    """A ``get_item`` that answers from a dict and remembers how it was asked."""

    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[dict[str, Any]] = []

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        source = kwargs["Key"]["source"]["S"]
        return {"Item": self.items[source]} if source in self.items else {}


def test_read_gives_the_manifest_as_plain_values_consistently_read() -> None:
    item = Manifest(status="COMPLETE", etag="e", started_at="t0").to_item("b/k.csv")
    table = Table({"b/k.csv": item})
    assert read(table, "t", "b/k.csv") == plain_item(item)
    assert read(table, "t", "b/other.csv") is None
    assert table.calls[0] == {
        "TableName": "t",
        "Key": {"source": {"S": "b/k.csv"}, "row": {"N": "0"}},
        "ConsistentRead": True,
    }


# -- settings ----------------------------------------------------------------------------------

SETTINGS = (
    "PROGRESS_EVERY",
    "WRITE_CONCURRENCY",
    "CHECKPOINT_SECONDS",
    "ROWS_PER_INVOCATION",
    "MAX_CONTINUATIONS",
    "TABLE_NAME",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(environment: pytest.MonkeyPatch) -> None:
    assert settings.progress_every() == 100
    assert settings.write_concurrency() == 4
    assert settings.checkpoint_seconds() == 5
    assert settings.rows_per_invocation() == float("inf")
    assert settings.max_continuations() == 100
    with pytest.raises(KeyError):
        settings.table_name()


def test_settings_from_the_environment(environment: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("PROGRESS_EVERY", "7"),
        ("WRITE_CONCURRENCY", "2"),
        ("CHECKPOINT_SECONDS", "0.5"),
        ("ROWS_PER_INVOCATION", "40"),
        ("MAX_CONTINUATIONS", "3"),
        ("TABLE_NAME", "t"),
    ]:
        environment.setenv(name, value)
    assert settings.progress_every() == 7
    assert settings.write_concurrency() == 2
    assert settings.checkpoint_seconds() == 0.5
    assert settings.rows_per_invocation() == 40
    assert settings.max_continuations() == 3
    assert settings.table_name() == "t"


def test_settings_below_their_minimum_are_raised_to_it(environment: pytest.MonkeyPatch) -> None:
    for name in ("PROGRESS_EVERY", "WRITE_CONCURRENCY", "CHECKPOINT_SECONDS", "MAX_CONTINUATIONS"):
        environment.setenv(name, "-5")
    environment.setenv("ROWS_PER_INVOCATION", "0")
    assert settings.progress_every() == 1
    assert settings.write_concurrency() == 1
    assert settings.checkpoint_seconds() == 0.05
    assert settings.max_continuations() == 0  # 0: a file may never be handed on
    assert settings.rows_per_invocation() == float("inf")  # 0 means no limit
    environment.setenv("ROWS_PER_INVOCATION", "-1")
    assert settings.rows_per_invocation() == float("inf")
    environment.setenv("ROWS_PER_INVOCATION", "1")
    assert settings.rows_per_invocation() == 1  # the smallest limit is a limit


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_without_a_lambda_context_there_is_no_deadline() -> None:
    deadline = settings.Deadline(object(), clock=lambda: 50.0)
    assert deadline.end is None
    assert deadline.stop_at == deadline.give_up_at == float("inf")
    assert deadline.request_seconds == 4.0
    assert not deadline.passed()


@pytest.mark.parametrize(
    ("timeout_s", "margin"),
    [(4, 2.0), (8, 2.0), (20, 5.0), (40, 10.0), (900, 10.0)],
)
def test_the_margin_is_a_quarter_of_the_budget_between_2_and_10_seconds(
    timeout_s: int, margin: float
) -> None:
    now = 1000.0
    clock = [now]
    deadline = settings.Deadline(Context(timeout_s * 1000), clock=lambda: clock[0])
    assert deadline.stop_at == now + timeout_s - margin
    assert deadline.request_seconds == margin / 2
    assert deadline.give_up_at == pytest.approx(now + timeout_s - margin / 2 - 0.1)
    assert deadline.end is not None
    # end is wall-clock time: the budget from now.
    assert abs(deadline.end - (datetime.now(timezone.utc).timestamp() + timeout_s)) < 5
    clock[0] = deadline.stop_at - 0.001
    assert not deadline.passed()
    clock[0] = deadline.stop_at
    assert deadline.passed()
