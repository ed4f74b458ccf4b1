"""``pip install .`` without extras: the advertised ``csv-pipeline deploy`` / ``destroy`` work.

The package is built and installed into a fresh venv (pip's cache makes the
second run cheap), then its console script deploys to and destroys from the
emulator this session already runs. Optional backends must not be needed for
that, and choosing one must say which extra to install.

The venv, the wheel build and boto3's install take ~18 s with a warm pip
cache (~25 s cold), more than the default run should pay for: the module
carries the ``install`` marker, which the default run leaves out and
``.ci/run`` runs as a step of its own (``pytest -m install -n 0``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from processes import run

from csv_pipeline_harness.provisioning.backends import Endpoint
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig

ROOT = Path(__file__).resolve().parent.parent
#: What the extras bring; none of it may be in a plain install.
OPTIONAL_MODULES = ("ministack", "docker", "testcontainers", "pytest")

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install <repo>`` and no extras; its bin directory."""
    venv = tmp_path_factory.mktemp("plain-install") / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120, check=True)
    bin_dir = venv / "bin"
    installed = run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return bin_dir


def cli_env(endpoint: Endpoint) -> dict[str, str]:
    """Test credentials for the emulator; nothing of the developer's AWS set-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION=endpoint.region,
    )
    return env


@pytest.fixture
def default_stack_restored(aws_endpoint: Endpoint) -> Iterator[None]:
    """The test destroys the default-named stack: put it back if the session had deployed it."""
    stack = Stack(aws_endpoint, StackConfig())
    try:
        stack.s3.head_bucket(Bucket=stack.config.bucket)
        existed = True
    except ClientError:
        existed = False
    yield
    if existed:
        stack.deploy()


def test_plain_install_has_no_optional_package(plain_install: Path) -> None:
    found = run(
        [
            str(plain_install / "python"),
            "-c",
            "import importlib.util, sys; "
            "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
            *OPTIONAL_MODULES,
        ],
        timeout=60,
        check=True,
    )
    assert found.stdout.split() == []


def test_plain_install_adds_two_import_names_and_no_development_tools(plain_install: Path) -> None:
    """Two names: csv_pipeline and csv_pipeline_harness; no harness, provisioning or tools."""
    listed = run(
        [
            str(plain_install / "python"),
            "-c",
            "from importlib import metadata; "
            "files = metadata.distribution('csv-pipeline-harness').files; "
            "print(' '.join(sorted({f.parts[0] for f in files if '.dist-info' not in f.parts[0]"
            " and f.parts[0] != '..'})))",
        ],
        timeout=60,
        cwd=plain_install,  # not the checkout, whose egg-info would answer
        check=True,
    )
    assert listed.stdout.split() == ["csv_pipeline", "csv_pipeline_harness"]


@pytest.mark.e2e
def test_plain_install_deploys_and_destroys(
    plain_install: Path, aws_endpoint: Endpoint, default_stack_restored: None
) -> None:
    cli = str(plain_install / "csv-pipeline")
    env = cli_env(aws_endpoint)
    where = ["--endpoint-url", str(aws_endpoint.url), "--region", aws_endpoint.region]

    helped = run([cli, "deploy", "--help"], env=env, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "--endpoint-url" in helped.stdout

    deployed = run([cli, "deploy", *where, "--json"], env=env, timeout=180)
    assert deployed.returncode == 0, deployed.stderr
    outputs = json.loads(deployed.stdout)
    config = StackConfig()
    assert outputs["bucket"] == config.bucket and outputs["table"] == config.table
    assert outputs["endpoint_url"] == aws_endpoint.url
    stack = Stack(aws_endpoint, config)
    stack.s3.head_bucket(Bucket=config.bucket)  # raises unless it exists

    destroyed = run([cli, "destroy", *where], env=env, timeout=180)
    assert destroyed.returncode == 0, destroyed.stderr
    assert "Stack removed." in destroyed.stdout
    assert f"removed function {config.function}" in destroyed.stdout
    assert stack.remaining() == []


@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("localstack", "containers"),
        ("ministack-container", "containers"),
        ("ministack", "emulator"),
    ],
)
def test_plain_install_names_the_extra_a_backend_needs(
    plain_install: Path, backend: str, extra: str
) -> None:
    done = run([str(plain_install / "csv-pipeline"), "up", "--backend", backend], timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"(the '{extra}' extra): pip install 'csv-pipeline-harness[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
