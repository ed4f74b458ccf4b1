"""Root conftest: ``pytester`` for the harness's own plugin tests.

The harness itself (``harness.pytest_plugin``) is loaded by pytest through
the package's ``pytest11`` entry point, as in any project that installs it.
"""

pytest_plugins = ["pytester"]
