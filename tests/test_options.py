"""Every setting is reachable three ways; command line beats env beats ini beats default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from csv_pipeline_harness import options

#: A valid value for each setting, and another one to tell the sources apart.
VALUES = {
    "backend": ("ministack", "endpoint"),
    "endpoint-url": ("http://127.0.0.1:1", "http://127.0.0.1:2"),
    "localstack-image": ("a:1", "b:2"),
    "ministack-image": ("a:1", "b:2"),
    "allow-real-aws": ("on", "off"),
    "canary-timeout": ("7", "0"),
    "lambda-source": ("ini_dir", "other_dir"),
    "lambda-handler": ("handler.f", "handler.g"),
    "aws-realism": ("on", "off"),
    "shrink-seconds": ("5", "9"),
}


def test_every_option_has_values_here() -> None:
    assert set(VALUES) == set(options.BY_NAME)


def test_one_prefix_for_every_flag_env_variable_and_ini_key() -> None:
    for option in options.OPTIONS:
        assert option.flag == f"--csv-pipeline-{option.name}"
        assert option.env == "CSV_PIPELINE_" + option.name.upper().replace("-", "_")
        assert option.ini == "csv_pipeline_" + option.name.replace("-", "_")


@pytest.mark.parametrize("name", sorted(VALUES))
def test_command_line_beats_env_beats_ini_beats_default(name: str) -> None:
    option = options.BY_NAME[name]
    first, second = VALUES[name]
    parsed_first = options.resolve_from(option, first, {}, "").value
    parsed_second = options.resolve_from(option, second, {}, "").value
    assert parsed_first != parsed_second

    default = options.resolve_from(option, None, {}, "")
    assert (default.value, default.source) == (option.default, "default")
    from_ini = options.resolve_from(option, None, {}, first, ini_dir=Path.cwd())
    assert (from_ini.value, from_ini.source) == (parsed_first, f"ini {option.ini}")
    from_env = options.resolve_from(option, None, {option.env: second}, first)
    assert (from_env.value, from_env.source) == (parsed_second, f"env {option.env}")
    from_cli = options.resolve_from(option, first, {option.env: second}, second)
    assert (from_cli.value, from_cli.source) == (parsed_first, option.flag)


def test_an_ini_path_is_relative_to_the_ini_file(tmp_path: Path) -> None:
    option = options.BY_NAME["lambda-source"]
    assert options.resolve_from(option, None, {}, "fn", ini_dir=tmp_path).value == tmp_path / "fn"
    from_env = options.resolve_from(option, None, {option.env: "fn"}, "", ini_dir=tmp_path)
    assert from_env.value == Path.cwd() / "fn"


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("backend", "nope", "unknown backend 'nope'"),
        ("aws-realism", "maybe", "'maybe' is not a switch"),
        ("canary-timeout", "-1", "'-1' must be 0 (off) or a number of seconds"),
        ("shrink-seconds", "soon", "'soon' is not a number of seconds"),
    ],
)
def test_a_bad_value_names_where_it_came_from(name: str, raw: str, message: str) -> None:
    option = options.BY_NAME[name]
    with pytest.raises(options.OptionError, match=re.escape(f"env {option.env}: {message}")):
        options.resolve_from(option, None, {option.env: raw}, "")


def test_a_switch_is_turned_off_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncsv_pipeline_aws_realism = on\n")
    assert options.value(pytester.parseconfig(), "aws-realism") is True
    setting = options.resolve(pytester.parseconfig("--no-csv-pipeline-aws-realism"), "aws-realism")
    assert (setting.value, setting.source) == (False, "--csv-pipeline-aws-realism")
