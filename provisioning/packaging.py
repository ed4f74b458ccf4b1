"""Build the Lambda deployment zip: from ``lambda/``, or from another implementation's directory.

The zip is byte-for-byte reproducible (sorted entries, fixed timestamps and
modes), so its SHA-256 equals the function's ``CodeSha256`` exactly when the
code is unchanged — which is how ``deploy`` knows whether to update.

Another implementation of the data contract (:func:`build_source_zip`) is a
directory whose files go to the zip's root, its handler named as
``module.function``; a ``requirements.txt`` there is installed into the zip
with pip, for the function's runtime and platform.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import csv_pipeline

#: Handler path inside the zip.
HANDLER = "csv_pipeline.handler.lambda_handler"

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def lambda_source_dir() -> Path:
    """The ``csv_pipeline`` package directory (``lambda/csv_pipeline`` in the repo)."""
    return Path(csv_pipeline.__file__).resolve().parent


def build_zip(
    source: Path | None = None, extra_files: Mapping[str, str | bytes] | None = None
) -> bytes:
    """Zip every ``.py`` file of the package under its package name.

    ``extra_files`` (zip path -> content) adds files beside the package, e.g.
    a test-only wrapper module for a variant of the function; the default
    zip, the one ``deploy`` ships, never has any.
    """
    package_dir = source or lambda_source_dir()
    entries: dict[str, bytes] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}"
        entries[name] = path.read_bytes()
    for name, content in (extra_files or {}).items():
        if name in entries:
            raise ValueError(f"extra file {name!r} would replace a file of the package")
        entries[name] = content.encode("utf-8") if isinstance(content, str) else content
    return _zip(entries)


def _zip(entries: Mapping[str, bytes]) -> bytes:
    """A reproducible zip of ``entries`` (zip path -> content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def code_sha256(zip_bytes: bytes) -> str:
    """Lambda's ``CodeSha256``: base64 of the SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode("ascii")


#: Where pip looks for wheels of the function's platform (Lambda's x86_64 Linux).
LAMBDA_PLATFORM = "manylinux2014_x86_64"

#: ``module.function``, with a dotted module path.
_HANDLER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class LambdaSourceError(ValueError):
    """A Lambda source directory or handler that cannot be deployed; the message says why."""


def handler_file(source: Path, handler: str) -> Path:
    """The file of ``source`` that defines ``handler``'s module, checked to exist.

    ``handler`` is what Lambda's ``Handler`` setting takes: ``module.function``
    (``pkg.module.function`` for a module inside a package), resolved the way
    the Python runtime resolves it, from the zip's root.
    """
    if not source.is_dir():
        what = "does not exist" if not source.exists() else "is not a directory"
        raise LambdaSourceError(f"Lambda source {source} {what}")
    if not _HANDLER.fullmatch(handler):
        raise LambdaSourceError(
            f"Lambda handler {handler!r} is not module.function (e.g. handler.lambda_handler)"
        )
    module = handler.rsplit(".", 1)[0].replace(".", "/")
    candidates = (source / f"{module}.py", source / module / "__init__.py")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LambdaSourceError(
        f"Lambda handler {handler!r}: neither {candidates[0]} nor {candidates[1]} exists"
    )


def runtime_version(runtime: str) -> str:
    """``python3.12`` -> ``3.12``: the version pip installs wheels for."""
    match = re.fullmatch(r"python(\d+\.\d+)", runtime)
    if match is None:
        raise LambdaSourceError(f"{runtime!r} is not a Python Lambda runtime")
    return match.group(1)


def build_source_zip(
    source: Path,
    *,
    runtime: str,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> bytes:
    """Zip every file of ``source`` at the zip's root, with its requirements installed.

    Caches (``__pycache__``, ``*.pyc``) are left out. When ``source`` holds a
    ``requirements.txt``, pip installs it for ``runtime`` on Lambda's platform
    (binary wheels only, so nothing is compiled for the machine that builds
    the zip) beside the code; a file of the source wins over a file of a
    package with the same path. A failing pip stops with its output.
    """
    if not source.is_dir():
        raise LambdaSourceError(f"Lambda source {source} is not a directory")
    entries: dict[str, bytes] = {}
    requirements = source / "requirements.txt"
    if requirements.is_file():
        entries.update(_installed(requirements, runtime_version(runtime)))
    entries.update(_files(source))
    for name, content in (extra_files or {}).items():
        if name in entries:
            raise ValueError(f"extra file {name!r} would replace a file of the Lambda source")
        entries[name] = content.encode("utf-8") if isinstance(content, str) else content
    return _zip(entries)


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` but caches, by its path relative to it."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def _installed(requirements: Path, python_version: str) -> dict[str, bytes]:
    """The files pip installs from ``requirements`` for the runtime's Python on Lambda."""
    with tempfile.TemporaryDirectory(prefix="lambda-deps-") as target:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            target,
            "--platform",
            LAMBDA_PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            python_version,
            "--only-binary=:all:",
            "--requirement",
            str(requirements),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LambdaSourceError(
                f"pip could not install {requirements} for Python {python_version} on "
                f"{LAMBDA_PLATFORM} (exit {done.returncode}):\n{done.stderr or done.stdout}"
            )
        return _files(Path(target))
