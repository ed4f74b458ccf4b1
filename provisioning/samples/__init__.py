"""The small sample CSV shipped with the package (blanks included)."""

from __future__ import annotations

from importlib import resources


def sample_csv() -> bytes:
    """``people.csv``: five rows, some cells blank."""
    return resources.files(__name__).joinpath("people.csv").read_bytes()
