"""Root conftest: the harness lives in provisioning.pytest_plugin."""

pytest_plugins = ["provisioning.pytest_plugin", "pytester"]
