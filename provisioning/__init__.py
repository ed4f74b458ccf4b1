"""Provisioning for the CSV pipeline: where the endpoint comes from, and what is built on it.

Installed as ``csv_pipeline_harness.provisioning``; it imports nothing else of
the harness (the pytest plugin and the CLI sit on top of it).

* :mod:`.backends` — emulators and endpoints (start, ready, stop).
* :mod:`.stack` — bucket, table, role, function, notification (boto3).
* :mod:`.samples` — the small sample CSV the demo and the contract tests upload.
"""
