"""AWS realism mode: each behaviour the wrapper injects happens in the deployed function.

The emulator answers 404 where AWS answers 403, never throttles, and sends
event keys however it likes; ``harness.realism`` makes the function meet
AWS's behaviour instead. The unit tests pin the pieces (key encoding, write
units, the token buckets); the end-to-end tests deploy a function inside the
wrapper and show each behaviour in its log and in the table; the last runs
part of the contract suite with ``--csv-pipeline-aws-realism``.
"""

from __future__ import annotations

import itertools
import re
import uuid

import boto3
import pytest
from boto3.dynamodb.conditions import Key

from csv_pipeline_harness import realism, realism_mode
from csv_pipeline_harness.provisioning.backends.base import EMULATOR_CREDENTIALS
from csv_pipeline_harness.stacks import DeployedPipeline, stack_fixture

#: Low enough that a few thousand rows meet throttling however fast the machine is.
RATE = 500
BURST = 100

realistic = stack_fixture(
    prefix="realism",
    **realism_mode.settings(
        environment={
            realism.RATE_ENV: str(RATE),
            realism.BURST_ENV: str(BURST),
            "PROGRESS_EVERY": "1000",
        }
    ),
)

SUMMARY = re.compile(
    r"REALISM summary: (\d+) write request\(s\) throttled \(\w+\), (\d+) of (\d+) batch item\(s\)"
)


def summaries(lines: list[str]) -> list[tuple[int, int, int]]:
    """(throttled requests, unprocessed items, batch items) of each invocation's summary."""
    found = (SUMMARY.search(line) for line in lines)
    return [(int(m[1]), int(m[2]), int(m[3])) for m in found if m]


# -- unit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain/key.csv", "plain/key.csv"),
        ("dir/a b é.csv", "dir/a+b+%C3%A9.csv"),
        ("x=1&y=(2).csv", "x%3D1%26y%3D%282%29.csv"),
        ("50%41.csv", "50%2541.csv"),  # not a valid encoding of anything: raw, so encoded
        ("dir/a+b+%C3%A9.csv", "dir/a+b+%C3%A9.csv"),  # already encoded: unchanged
    ],
)
def test_event_keys_are_encoded_as_s3_encodes_them(raw: str, encoded: str) -> None:
    assert realism.aws_encoded_key(raw) == encoded


def test_write_units_are_the_item_size_rounded_up_to_a_kilobyte() -> None:
    def put(**attributes: dict[str, object]) -> dict[str, object]:
        return {"PutRequest": {"Item": attributes}}

    assert realism.write_units(put(source={"S": "b/k"}, row={"N": "1"})) == 1
    # 1,000 name bytes + 1,000 value bytes: 2 units; one byte under the second KB: 1.
    assert realism.write_units(put(**{"n" * 1000: {"S": "v" * 1000}})) == 2
    assert realism.write_units(put(a={"S": "v" * 1023})) == 1
    assert realism.write_units(put(a={"S": "é" * 512})) == 2
    assert realism.write_units({"DeleteRequest": {"Key": {"source": {"S": "x"}}}}) == 1


def test_a_partition_key_gets_its_rate_and_burst_and_no_more() -> None:
    now = [0.0]
    buckets = realism.PartitionBuckets(
        rate=100, burst=50, partition_key="source", clock=lambda: now[0]
    )
    hot = buckets.key_of("t", {"source": {"S": "hot"}, "row": {"N": "1"}})
    cold = buckets.key_of("t", {"source": {"S": "cold"}})
    assert buckets.admit([(hot, 1)] * 60) == [True] * 50 + [False] * 10
    assert buckets.admit([(cold, 1)]) == [True]  # another key has its own bucket
    assert not buckets.admit_all([(hot, 1)])
    now[0] = 0.1  # 10 units later
    assert not buckets.admit_all([(hot, 6), (hot, 5)])  # all or nothing
    assert buckets.admit_all([(hot, 6), (hot, 4)])
    now[0] = 100.0
    assert buckets.admit([(hot, 1)] * 60).count(True) == 50  # never more than the burst


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_missing_key_answers_403_and_the_object_is_skipped(realistic: DeployedPipeline) -> None:
    key = f"realism/{uuid.uuid4().hex}.hold"  # not a .csv: no notification
    etag = realistic.upload(key, b"a\n1\n")
    realistic.s3.delete_object(Bucket=realistic.config.bucket, Key=key)
    since = realistic.log_mark()
    response = realistic.invoke(realistic.s3_event(key, etag, "0A"))
    assert response["Payload"]["results"][0]["status"] == "GONE", response
    assert realistic.manifest(key) is None
    lines = realistic.wait_for_log(since, "REALISM summary")
    assert any("REALISM S3 HeadObject of a missing key answers 403" in line for line in lines)
    skipped = [line for line in lines if f"Skipping {realistic.source(key)}" in line]
    assert skipped and "cannot be read (403)" in skipped[0], lines[-20:]


@pytest.mark.e2e
def test_a_hot_partition_is_throttled_and_the_table_is_still_exact(
    realistic: DeployedPipeline,
) -> None:
    rows = 1000
    body = "id,text,blank\n" + "".join(f"{i},row {i} é,\n" for i in range(1, rows + 1))
    key = f"realism/hot-{uuid.uuid4().hex}.csv"
    since = realistic.log_mark()
    result = realistic.ingest(key, body.encode(), timeout=180)
    assert result.status == "COMPLETE", result.manifest
    assert result.manifest["rows_written"] == rows
    assert result.manifest["rows_rejected"] == 0
    assert realistic.count_rows(key, after=0) == rows
    sample = [1, 2, 499, 500, 501, 999, rows]
    assert [
        {k: v for k, v in r.items() if k != "source"} for r in realistic.rows_by_number(key, sample)
    ] == [{"row": n, "id": str(n), "text": f"row {n} é", "blank": None} for n in sample]
    lines = realistic.wait_for_log(since, f"Finished {realistic.source(key)}")
    counts = summaries(realistic.wait_for_log(since, "REALISM summary"))
    throttled = sum(c[0] for c in counts)
    unprocessed = sum(c[1] for c in counts)
    # 1,000 rows at 500 units/s after a burst of 100 take at least 1.8 s: the
    # writer, far faster, cannot go through unthrottled.
    assert unprocessed + throttled > 0, counts
    assert sum(c[2] for c in counts) > rows, "items handed back are sent again"
    finished = next(line for line in lines if f"Finished {realistic.source(key)}" in line)
    assert int(re.search(r"(\d+) requests resent", finished)[1]) > 0, finished  # type: ignore[index]


@pytest.mark.e2e
def test_a_key_with_a_space_and_an_accent_lands_under_the_decoded_key(
    realistic: DeployedPipeline,
) -> None:
    key = f"realism/{uuid.uuid4().hex[:6]} café (1).csv"
    result = realistic.ingest(key, b"a\nx\n")
    assert result.status == "COMPLETE", result.manifest
    assert result.rows == [{"source": realistic.source(key), "row": 1, "a": "x"}]


@pytest.mark.e2e
def test_a_raw_event_key_arrives_encoded(realistic: DeployedPipeline) -> None:
    """An event carrying a raw key (as an emulator might send) reaches the handler encoded.

    ``%41`` in the raw key would be decoded to ``A`` by a handler given the raw
    key, which would then look for an object that does not exist.
    """
    key = f"realism/{uuid.uuid4().hex[:6]} 50%41 é.hold"  # no notification
    etag = realistic.upload(key, b"a\n1\n")
    event = realistic.s3_event(key, etag, "0A")
    event["Records"][0]["s3"]["object"]["key"] = key
    since = realistic.log_mark()
    response = realistic.invoke(event)
    assert response["Payload"]["results"][0]["status"] == "COMPLETE", response
    assert realistic.rows(key) == [{"source": realistic.source(key), "row": 1, "a": "1"}]
    lines = realistic.wait_for_log(since, "REALISM summary")
    assert any(f"event key {key!r} arrives URL-encoded" in line for line in lines), lines[-20:]


@pytest.mark.e2e
def test_a_resource_clients_batch_writer_gets_its_items_back_and_writes_all(
    realistic: DeployedPipeline,
) -> None:
    """Any client is served: a boto3 resource's writer resends what is handed back, intact.

    The buckets run on a clock of their own that moves 50 ms a call (10 units
    at this rate, fewer than a batch needs), so items are handed back however
    fast or slow the machine is.
    """
    endpoint = realistic.endpoint
    table = boto3.resource(
        "dynamodb", region_name=endpoint.region, endpoint_url=endpoint.url, **EMULATOR_CREDENTIALS
    ).Table(realistic.config.table)
    ticks = itertools.count(0.0, 0.05)
    hooks = realism.Realism(
        realism.PartitionBuckets(
            rate=200, burst=25, partition_key="source", clock=lambda: next(ticks)
        )
    )
    hooks.register(table.meta.client)
    source = f"host/{uuid.uuid4().hex}"
    with table.batch_writer() as writer:
        for n in range(1, 201):
            writer.put_item(Item={"source": source, "row": n, "v": f"é{n}"})
    assert hooks.counters.values["unprocessed_items"] > 0, hooks.counters.summary()
    items = table.query(KeyConditionExpression=Key("source").eq(source), ConsistentRead=True)
    assert [(int(i["row"]), i["v"]) for i in items["Items"]] == [
        (n, f"é{n}") for n in range(1, 201)
    ]


@pytest.mark.e2e
def test_a_throttled_single_write_is_retried_by_the_clients_own_policy(
    realistic: DeployedPipeline,
) -> None:
    client = realistic.endpoint.client("dynamodb")
    hooks = realism.Realism(realism.PartitionBuckets(rate=1, burst=1, partition_key="source"))
    hooks.register(client)
    item = {"source": {"S": f"host/{uuid.uuid4().hex}"}, "row": {"N": "0"}}
    assert hooks.buckets.admit([(hooks.buckets.key_of(realistic.config.table, item), 1)]) == [True]
    response = client.put_item(TableName=realistic.config.table, Item=item)
    assert response["ResponseMetadata"]["RetryAttempts"] >= 1
    assert hooks.counters.values["throttled_requests"] >= 1
    stored = client.get_item(TableName=realistic.config.table, Key=item, ConsistentRead=True)
    assert stored["Item"] == item


#: Contract tests that cover the three injected behaviours' ground: keys, many rows, rewrites.
CONTRACT_TESTS = (
    "test_seed_sample_with_blanks",
    "test_object_keys_are_decoded_exactly",
    "test_reupload_with_fewer_rows_leaves_exactly_the_new_rows",
    "test_ten_thousand_rows",
)

#: Run after them in the same session: its function was the wrapped one, and was throttled.
WRAPPED_CHECK = f"""
import re

def throttled(line):
    summary = re.search({SUMMARY.pattern!r}, line)
    return summary is not None and int(summary[1]) + int(summary[2]) > 0

def test_zz_the_session_function_ran_wrapped(pipeline):
    # An invocation's lines arrive when it ends, which may be after its manifest.
    lines = pipeline.wait_for_log(0, throttled, "a summary showing throttling", timeout=60)
    assert any("REALISM on: wrapping {realism.DEFAULT_HANDLER}" in line for line in lines)
"""


@pytest.mark.harness
@pytest.mark.e2e
def test_the_contract_suite_passes_in_realism_mode(pytester: pytest.Pytester) -> None:
    check = pytester.makepyfile(test_wrapped=WRAPPED_CHECK)
    result = pytester.runpytest(
        "--csv-pipeline-backend=ministack",
        "--csv-pipeline-aws-realism",
        "-v",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "csv_pipeline_harness.contract.test_pipeline",
        str(check),
        "-k",
        " or ".join((*CONTRACT_TESTS, "test_zz_the_session_function_ran_wrapped")),
    )
    result.stdout.fnmatch_lines(["aws realism: on (*"])
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] > len(CONTRACT_TESTS), outcomes
    result.stdout.fnmatch_lines(
        ["*test_wrapped.py::test_zz_the_session_function_ran_wrapped PASSED*"]
    )


def test_realism_is_off_unless_asked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "CSV_PIPELINE_AWS_REALISM"
    monkeypatch.delenv(env, raising=False)
    assert not realism_mode.enabled(pytester.parseconfig())
    assert realism_mode.enabled(pytester.parseconfig("--csv-pipeline-aws-realism"))
    monkeypatch.setenv(env, "1")
    assert realism_mode.enabled(pytester.parseconfig())
    # The command line switches it off again.
    assert not realism_mode.enabled(pytester.parseconfig("--no-csv-pipeline-aws-realism"))
    monkeypatch.setenv(env, "0")
    pytester.makeini("[pytest]\ncsv_pipeline_aws_realism = true\n")
    assert not realism_mode.enabled(pytester.parseconfig())  # the environment wins over ini
    monkeypatch.delenv(env)
    assert realism_mode.enabled(pytester.parseconfig())
    monkeypatch.setenv(env, "maybe")
    with pytest.raises(pytest.UsageError, match="CSV_PIPELINE_AWS_REALISM"):
        realism_mode.enabled(pytester.parseconfig())


def test_the_session_stack_is_wrapped_around_its_own_handler() -> None:
    from csv_pipeline_harness.provisioning.stack import StackConfig

    config, files = realism_mode.wrap(
        StackConfig(handler="mine.handle", environment={"X": "1"}),
        {"mine.py": "def handle(e, c): pass\n"},
    )
    assert config.handler == "realism.lambda_handler"
    assert config.environment == {"X": "1", realism.HANDLER_ENV: "mine.handle"}
    assert files["realism.py"] == realism_mode.WRAPPER_FILE.read_bytes()
    assert files["mine.py"] == "def handle(e, c): pass\n"
