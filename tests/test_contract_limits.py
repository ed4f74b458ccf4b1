"""The contract's tests take their limits from the harness; this Lambda must use the same."""

from __future__ import annotations

from csv_pipeline import manifest, parsing
from csv_pipeline_harness.contract import limits, oracle, strategies


def test_the_lambda_uses_the_contracts_limits() -> None:
    assert parsing.MAX_ITEM_BYTES == limits.ITEM_LIMIT_BYTES
    assert parsing.MAX_ATTRIBUTE_NAME_BYTES == limits.ATTRIBUTE_NAME_LIMIT_BYTES
    assert parsing.MANIFEST_OTHER_FIELDS_BYTES == limits.MANIFEST_OTHER_FIELDS_BYTES
    assert parsing.HEADER_LIMIT == limits.HEADER_LINE_LIMIT_BYTES
    assert frozenset(limits.RESERVED_NAMES) == parsing.RESERVED_COLUMNS
    assert manifest.MAX_LISTED_REJECTIONS == limits.LISTED_REJECTIONS


def test_the_strategies_and_the_oracle_use_the_limits_module() -> None:
    """One definition: a limit changed in ``limits`` changes what is generated and expected."""
    assert strategies.ITEM_LIMIT_BYTES is limits.ITEM_LIMIT_BYTES
    assert strategies.RESERVED_NAMES is limits.RESERVED_NAMES
    assert oracle.HEADER_LINE_LIMIT_BYTES is limits.HEADER_LINE_LIMIT_BYTES
    assert oracle.LISTED_REJECTIONS is limits.LISTED_REJECTIONS
