"""Build the MiniStack container image with no container registry.

For air-gapped CI and machines that reach only Debian and PyPI mirrors:

1. ``debootstrap --variant=minbase --include=python3,python3-venv`` makes a
   Debian root filesystem (about 70 s);
2. a venv is created inside it, and its Python reports its wheel tags;
3. the host's pip downloads the pinned wheels (``ministack`` at the pinned
   version, ``boto3`` matching ministack's botocore pin, because MiniStack's
   local Lambda executor imports boto3 from the server's own environment)
   for exactly that Python and platform;
4. they are installed inside with ``pip install --no-index``;
5. ``tar | docker import`` turns the tree into an image with the same
   ``CMD``/``EXPOSE``/``ENV`` contract as the published MiniStack image.

Idempotent: an image already present under the tag is left alone (``force``
rebuilds). The default tag is the one the ``ministack-container`` backend
runs, so a build makes that backend work offline.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from csv_pipeline_harness.provisioning.backends.ministack_container import (
    GATEWAY_PORT,
    MinistackContainerBackend,
    ministack_version,
)

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Where the server's venv lives inside the image.
VENV = "/opt/ministack"
#: Wheels are downloaded into the root filesystem here, then deleted.
WHEELS_IN_ROOT = "/tmp/wheels"
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
}
#: Printed by the chroot's Python: what wheels it can install.
TAGS_SCRIPT = """
import json, sys
from pip._vendor.packaging import tags
seen = list(tags.sys_tags())
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "abis": sorted({t.abi for t in seen if t.abi != "none"}),
    "platforms": list(dict.fromkeys(t.platform for t in seen if t.platform != "any")),
}))
"""
#: Image settings, as ``docker import --change`` instructions.
IMAGE_CHANGES = (
    f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"ENV GATEWAY_PORT={GATEWAY_PORT}",
    "ENV LAMBDA_EXECUTOR=local",
    "ENV S3_DATA_DIR=/tmp/ministack-data/s3",
    "ENV PYTHONUNBUFFERED=1",
    "ENV LANG=C.UTF-8",
    f"EXPOSE {GATEWAY_PORT}",
    f"WORKDIR {VENV}",
    'CMD ["python", "-m", "ministack"]',
)


class ImageBuildError(RuntimeError):
    """The image could not be built; the message names the cause and the fix."""


@dataclass(frozen=True)
class BuildResult:
    tag: str
    built: bool
    seconds: float


def pinned_requirements() -> list[str]:
    """ministack at its pin, and boto3/botocore matching ministack's botocore pin."""
    version = ministack_version()
    botocore_pin = next(
        (
            r.split(";")[0].strip()
            for r in (_requires("ministack") or [])
            if r.replace(" ", "").startswith("botocore==")
        ),
        None,
    )
    requirements = [f"ministack=={version}"]
    if botocore_pin:
        requirements.append(botocore_pin)
    try:
        requirements.append(f"boto3=={metadata.version('boto3')}")
    except metadata.PackageNotFoundError:
        requirements.append("boto3")  # pip picks the release matching the botocore pin
    return requirements


def _requires(distribution: str) -> list[str] | None:
    try:
        return metadata.requires(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_tools() -> None:
    """Fail early, naming the package to install, when a tool is missing."""
    problems = []
    if os.geteuid() != 0:
        problems.append("debootstrap and chroot need root: run as root (e.g. sudo)")
    if shutil.which("debootstrap") is None:
        problems.append("debootstrap is not installed: apt-get install debootstrap")
    if shutil.which("docker") is None:
        problems.append("the docker CLI is not installed: apt-get install docker.io")
    elif not _engine_answers():
        problems.append("no Docker engine answers: start it (dockerd, or systemctl start docker)")
    for tool in ("chroot", "tar"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH")
    if problems:
        raise ImageBuildError("cannot build the image: " + "; ".join(problems))


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_image(
    tag: str | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or find) the MiniStack image under ``tag``; see the module docstring."""
    tag = tag or MinistackContainerBackend().image
    started = time.monotonic()
    check_tools()
    if not force and image_exists(tag):
        say(f"{tag} is already present; nothing to do (--force rebuilds it)")
        return BuildResult(tag, built=False, seconds=time.monotonic() - started)
    requirements = pinned_requirements()
    mirror = mirror or os.environ.get("DEBIAN_MIRROR") or DEFAULT_MIRROR
    work = Path(tempfile.mkdtemp(prefix="ministack-image-"))
    rootfs = work / "rootfs"
    try:
        step = _Steps(say)
        step.run(
            f"debootstrap {suite} (minbase + python3, python3-venv) from {mirror}",
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                suite,
                str(rootfs),
                mirror,
            ],
        )
        step.run("create the venv", _chroot(rootfs, "python3", "-m", "venv", VENV))
        found = json.loads(
            step.run(
                "read the venv's wheel tags",
                _chroot(rootfs, f"{VENV}/bin/python", "-c", TAGS_SCRIPT),
            )
        )
        wheels = rootfs / WHEELS_IN_ROOT.lstrip("/")
        step.run(
            f"download wheels for CPython {found['version']}: {' '.join(requirements)}",
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--dest",
                str(wheels),
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                found["version"],
                *_each("--abi", found["abis"]),
                *_each("--platform", found["platforms"]),
                *requirements,
            ],
        )
        step.run(
            "install them offline",
            _chroot(
                rootfs,
                f"{VENV}/bin/pip",
                "install",
                "--no-index",
                "--no-cache-dir",
                "--find-links",
                WHEELS_IN_ROOT,
                *requirements,
            ),
        )
        step.run(
            "check the server imports",
            _chroot(rootfs, f"{VENV}/bin/python", "-c", "import ministack.app, boto3"),
        )
        _trim(rootfs)
        step.run(f"import the tree as {tag}", lambda: _docker_import(rootfs, tag, requirements))
    finally:
        _remove_tree(work)
    seconds = time.monotonic() - started
    say(f"built {tag} in {seconds:.0f}s")
    return BuildResult(tag, built=True, seconds=seconds)


class _Steps:
    """Runs build steps, printing one line each and keeping their output for errors."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def run(self, title: str, command: Sequence[str] | Callable[[], str]) -> str:
        """Run a command (or a callable returning its output); raise ImageBuildError on failure."""
        self.say(f"- {title} ...")
        began = time.monotonic()
        if callable(command):
            output = command()
        else:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                env=CHROOT_ENV if command[0] == "chroot" else None,
            )
            if result.returncode != 0:
                lines = (result.stdout + result.stderr).strip().splitlines()
                raise ImageBuildError(
                    f"step failed ({title}), exit code {result.returncode}: "
                    f"{shlex.join(command)[:300]}\n" + "\n".join(lines[-30:])
                )
            output = result.stdout
        self.say(f"  done in {time.monotonic() - began:.0f}s")
        return output


def _chroot(rootfs: Path, *command: str) -> list[str]:
    return ["chroot", str(rootfs), *command]


def _each(option: str, values: Sequence[str]) -> list[str]:
    return [part for value in values for part in (option, value)]


def _trim(rootfs: Path) -> None:
    """Drop what the server never reads: downloaded wheels and .debs, apt lists, docs."""
    for relative in (
        WHEELS_IN_ROOT.lstrip("/"),
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        path = rootfs / relative
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()


def _docker_import(rootfs: Path, tag: str, requirements: Sequence[str]) -> str:
    """``tar -c rootfs | docker import`` with the image settings; returns the image id."""
    changes = [part for change in IMAGE_CHANGES for part in ("--change", change)]
    message = f"offline build: {' '.join(requirements)} on Debian via debootstrap"
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None
    imported = subprocess.run(
        ["docker", "import", *changes, "--message", message, "-", tag],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
    )
    tar.stdout.close()
    tar_error = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    if tar.wait() != 0 or imported.returncode != 0:
        raise ImageBuildError(
            f"docker import of {rootfs} failed: tar exit {tar.returncode}, "
            f"docker exit {imported.returncode}\n{tar_error[-2000:]}{imported.stderr[-2000:]}"
        )
    return imported.stdout.strip()


def _remove_tree(work: Path) -> None:
    """Remove the build directory, first unmounting anything debootstrap left mounted in it.

    A failed debootstrap can leave /proc or /sys mounted inside the tree;
    deleting through such a mount would delete the host's files.
    """
    prefix = str(work.resolve()) + "/"
    for target in sorted(_mounts_below(prefix), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    if _mounts_below(prefix):
        raise ImageBuildError(f"{work} still has mounts inside; unmount them, then delete it")
    shutil.rmtree(work, ignore_errors=True)


def _mounts_below(prefix: str) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = (line.split()[1] for line in lines if len(line.split()) > 1)
    return [point for point in points if point.startswith(prefix)]
