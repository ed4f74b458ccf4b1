"""Provisioning for the CSV pipeline: where the endpoint comes from, and what is built on it.

* :mod:`provisioning.backends` — emulators and endpoints (start, ready, stop).
* :mod:`provisioning.stack` — bucket, table, role, function, notification (boto3).
* :mod:`provisioning.cli` — ``csv-pipeline`` / ``python -m provisioning``.
"""
