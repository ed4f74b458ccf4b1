"""The test harness: what a pytest session needs to judge a deployed pipeline.

* :mod:`harness.pytest_plugin` — options, fixtures and the session's stack
  (loaded through the ``pytest11`` entry point).
* :mod:`harness.client` — upload a CSV, wait for its manifest, read rows back.
* :mod:`harness.canary` — one upload at session start that proves the wiring.
* :mod:`harness.contract` — the data contract's tests, shipped with the package.
"""
