"""Build the Lambda deployment zip from ``lambda/``.

The zip is byte-for-byte reproducible (sorted entries, fixed timestamps and
modes), so its SHA-256 equals the function's ``CodeSha256`` exactly when the
code is unchanged — which is how ``deploy`` knows whether to update.
"""

from __future__ import annotations

import base64
import hashlib
import io
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
