"""A CSV-to-DynamoDB Lambda as such functions are often first written.

It works for a small, clean file with a plain name, uploaded once; the
contract's tests say where it does not. It reads only the first record of
an event, uses the event's key without URL-decoding it, reads the whole
object into memory, writes one ``put_item`` per row and stores every cell as
text (blank cells as ``""``, a BOM as part of the first column's name), never
removes the rows of an earlier version, and turns every error into a 500
that nobody reads.
"""

import csv
import datetime
import io
import json
import os

import boto3

s3 = boto3.client("s3")
table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def lambda_handler(event, context):
    record = event["Records"][0]
    bucket = record["s3"]["bucket"]["name"]
    key = record["s3"]["object"]["key"]
    manifest = {
        "source": f"{bucket}/{key}",
        "row": 0,
        "etag": record["s3"]["object"]["eTag"],
        "sequencer": record["s3"]["object"].get("sequencer", ""),
        "started_at": now(),
    }
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        text = obj["Body"].read().decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))

        count = 0
        for count, row in enumerate(reader, start=1):
            table.put_item(Item={"source": f"{bucket}/{key}", "row": count, **row})
            if count % 100 == 0:
                print(f"Processed {count} records so far ({bucket}/{key})")

        table.put_item(
            Item={
                **manifest,
                "status": "COMPLETE",
                "rows_written": count,
                "rows_rejected": 0,
                "rejected": [],
                "columns": reader.fieldnames or [],
                "finished_at": now(),
            }
        )
        return {"statusCode": 200, "body": json.dumps({"rows": count})}
    except Exception as exc:
        print(f"Error processing {key}: {exc}")
        table.put_item(
            Item={**manifest, "status": "FAILED", "error": str(exc), "finished_at": now()}
        )
        return {"statusCode": 500, "body": json.dumps({"error": str(exc)})}
