"""Every setting of the pytest plugin, reachable three ways through one resolver.

Each setting ``NAME`` is the command-line option ``--csv-pipeline-NAME``, the
environment variable ``CSV_PIPELINE_NAME`` (upper case, ``_`` for ``-``) and
the ini key ``csv_pipeline_name``. The first of these that is set wins:

    command line  >  environment  >  ini file  >  default

A bad value stops the run before anything starts, naming where it came from.
Switches take ``1/true/yes/on`` or ``0/false/no/off`` in the environment and
the ini file; on the command line ``--csv-pipeline-NAME`` turns one on and
``--no-csv-pipeline-NAME`` off (overriding an environment or ini setting).

This module imports only the standard library and pytest, so registering the
options in a project that never uses the harness costs next to nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FLAG_PREFIX = "--csv-pipeline-"
ENV_PREFIX = "CSV_PIPELINE_"
INI_PREFIX = "csv_pipeline_"

#: Backend names (kept here, not imported from provisioning: importing the
#: backends imports boto3, which a session that never uses them must not pay for).
BACKENDS = ("auto", "ministack", "localstack", "ministack-container", "endpoint", "aws")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class OptionError(ValueError):
    """A setting's value cannot be used; the message names where it came from.

    :func:`resolve` raises it as :class:`pytest.UsageError`, which stops the run.
    """


def _text(raw: str, where: str) -> str:
    return raw.strip()


def _switch(raw: str, where: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OptionError(f"{where}: {raw!r} is not a switch; use on or off (1 or 0)")


def _seconds(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise OptionError(f"{where}: {raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise OptionError(f"{where}: {raw!r} must be 0 (off) or a number of seconds")
    return value


def _backend(raw: str, where: str) -> str:
    value = raw.strip()
    if value not in BACKENDS:
        raise OptionError(f"{where}: unknown backend {raw!r}; choose one of {', '.join(BACKENDS)}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: its name, what it means, and how its text becomes a value."""

    name: str
    help: str
    parse: Callable[[str, str], Any] = _text
    default: Any = None
    metavar: str | None = None
    switch: bool = False
    #: Paths in an ini file are relative to that file.
    path: bool = False

    @property
    def flag(self) -> str:
        return FLAG_PREFIX + self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def ini(self) -> str:
        return INI_PREFIX + self.name.replace("-", "_")

    @property
    def dest(self) -> str:
        return self.ini


OPTIONS: tuple[Option, ...] = (
    Option(
        "backend",
        "where the AWS endpoint comes from: auto (the embedded emulator when installed, "
        "else a container), ministack, localstack, ministack-container, endpoint, or aws "
        "(real AWS, with allow-real-aws)",
        _backend,
        "auto",
        metavar="NAME",
    ),
    Option("endpoint-url", "URL of a running emulator, for backend=endpoint", metavar="URL"),
    Option(
        "localstack-image",
        "LocalStack image for backend=localstack (default localstack/localstack:4.14)",
        metavar="IMAGE",
    ),
    Option(
        "ministack-image",
        "MiniStack image for backend=ministack-container "
        "(default ministackorg/ministack:<the pinned ministack version>)",
        metavar="IMAGE",
    ),
    Option(
        "allow-real-aws",
        "let backend=aws deploy to the account of your AWS credentials; without it the run "
        "stops before anything is created, naming the account, region and expected cost",
        _switch,
        False,
        switch=True,
    ),
    Option(
        "canary-timeout",
        "seconds the canary CSV uploaded before the first pipeline test may take to reach "
        "its final state; 0 skips it (default 30, 120 on real AWS)",
        _seconds,
        metavar="SECONDS",
    ),
    Option(
        "lambda-source",
        "deploy the Lambda in DIR (its files at the zip's root, its requirements.txt "
        "installed) instead of this package's; tests that use the harness's fixtures run "
        "only when marked csv_pipeline_contract",
        metavar="DIR",
        path=True,
    ),
    Option(
        "lambda-handler",
        "the handler of the lambda-source Lambda, e.g. handler.lambda_handler",
        metavar="MODULE.FUNCTION",
    ),
    Option(
        "aws-realism",
        "run the session's function inside a wrapper that behaves like AWS where the "
        "emulator is kinder: S3 403 for missing keys, DynamoDB throttling per partition key, "
        "URL-encoded event keys",
        _switch,
        False,
        switch=True,
    ),
    Option(
        "shrink-seconds",
        "seconds Hypothesis may spend shrinking an end-to-end property's failure (default 30)",
        _seconds,
        30.0,
        metavar="SECONDS",
    ),
)

BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (``default`` when nowhere)."""

    value: Any
    source: str

    @property
    def given(self) -> bool:
        return self.source != "default"


def register(parser: Any) -> None:
    """Add every option (one group in ``pytest --help``) and its ini key to ``parser``."""
    group = parser.getgroup(
        "csv-pipeline", "csv-pipeline-harness (S3 -> Lambda -> DynamoDB; see `csv-pipeline --help`)"
    )
    for option in OPTIONS:
        text = f"{option.help} (env {option.env}, ini {option.ini})"
        if option.switch:
            group.addoption(
                option.flag,
                action="store_const",
                const="on",
                dest=option.dest,
                default=None,
                help=text,
            )
            group.addoption(
                f"--no-{option.flag[2:]}",
                action="store_const",
                const="off",
                dest=option.dest,
                default=None,
                help=f"turn {option.flag} off",
            )
        else:
            group.addoption(
                option.flag, dest=option.dest, default=None, metavar=option.metavar, help=text
            )
        parser.addini(option.ini, f"{option.help} (see {option.flag})", default="")


def raw_settings(
    option: Option,
    cli: str | None,
    environ: Any,
    ini: str,
    ini_dir: Path | None,
) -> tuple[str, str, Path | None] | None:
    """``(text, where, base directory)`` of the first place that sets ``option``."""
    if cli is not None and str(cli).strip() != "":
        return str(cli), option.flag, Path.cwd()
    env = environ.get(option.env)
    if env is not None and env.strip() != "":
        return env, f"env {option.env}", Path.cwd()
    if ini is not None and str(ini).strip() != "":
        return str(ini), f"ini {option.ini}", ini_dir
    return None


def resolve_from(
    option: Option,
    cli: str | None,
    environ: Any,
    ini: str,
    ini_dir: Path | None = None,
) -> Setting:
    """The value of ``option`` given its three sources; :class:`OptionError` when bad."""
    found = raw_settings(option, cli, environ, ini, ini_dir)
    if found is None:
        return Setting(option.default, "default")
    text, where, base = found
    value = option.parse(text, where)
    if option.path and value:
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        value = path
    return Setting(value, where)


def resolve(config: Any, name: str) -> Setting:
    """The setting ``name`` of a pytest session (cached in its stash)."""
    cache: dict[str, Setting] = _cache(config)
    if name not in cache:
        option = BY_NAME[name]
        ini_dir = config.inipath.parent if config.inipath else None
        try:
            cache[name] = resolve_from(
                option,
                config.getoption(option.dest, None),
                os.environ,
                config.getini(option.ini),
                ini_dir,
            )
        except OptionError as exc:
            raise pytest.UsageError(str(exc)) from None
    return cache[name]


def value(config: Any, name: str) -> Any:
    return resolve(config, name).value


def given(config: Any) -> list[str]:
    """The names of the settings this session sets anywhere (empty: the plugin stays inert)."""
    return [option.name for option in OPTIONS if resolve(config, option.name).given]


_SETTINGS = pytest.StashKey[dict[str, Setting]]()


def _cache(config: Any) -> dict[str, Setting]:
    cache: dict[str, Setting] = config.stash.setdefault(_SETTINGS, {})
    return cache


#: Values resolved by the running session, for code that has no ``config`` at hand.
_SESSION: dict[str, Any] = {}


def remember(config: Any, *names: str) -> None:
    """Keep ``names``' values of this session for :func:`session_value`."""
    for name in names:
        _SESSION[name] = value(config, name)


def session_value(name: str) -> Any:
    """The running session's value of ``name``; outside pytest, the environment's or the default."""
    if name in _SESSION:
        return _SESSION[name]
    return resolve_from(BY_NAME[name], None, os.environ, "").value
