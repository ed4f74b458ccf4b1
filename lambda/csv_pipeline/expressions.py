"""DynamoDB update and condition expressions for the manifest's guarded writes.

Every write that coordinates invocations is a compare-and-swap on the
manifest item. Building those requests — placeholder names, typed values,
``attribute_not_exists`` for absent attributes — is mechanical and kept here,
so :mod:`csv_pipeline.lease` reads as the rules it enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeSerializer

_serializer = TypeSerializer()


def attribute_value(value: Any) -> dict[str, Any]:
    """One Python value as a low-level DynamoDB attribute value (floats as numbers)."""
    if isinstance(value, float):
        return {"N": repr(value)}
    return dict(_serializer.serialize(value))


@dataclass(frozen=True)
class Condition:
    """A ``ConditionExpression`` with its placeholders."""

    expression: str
    names: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)

    def __and__(self, other: Condition) -> Condition:
        return Condition(
            f"({self.expression}) AND ({other.expression})",
            {**self.names, **other.names},
            {**self.values, **other.values},
        )


def manifest_absent() -> Condition:
    return Condition("attribute_not_exists(#pk)", {"#pk": "source"})


def holds_values(current: Mapping[str, Any], attributes: tuple[str, ...]) -> Condition:
    """True while each of ``attributes`` still has its value in ``current`` (or is absent)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    parts = []
    for i, attribute in enumerate(attributes):
        names[f"#c{i}"] = attribute
        if attribute in current:
            values[f":c{i}"] = attribute_value(current[attribute])
            parts.append(f"#c{i} = :c{i}")
        else:
            parts.append(f"attribute_not_exists(#c{i})")
    return Condition(" AND ".join(parts), names, values)


def owned_by(owner: str) -> Condition:
    return Condition("#owner = :owner", {"#owner": "lease_owner"}, {":owner": {"S": owner}})


def not_superseded() -> Condition:
    return Condition("attribute_not_exists(#superseded)", {"#superseded": "superseded_by"})


@dataclass(frozen=True)
class Update:
    """An ``UpdateExpression``: attributes to set (Python values) and to remove."""

    set: Mapping[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def __add__(self, other: Update) -> Update:
        return Update({**self.set, **other.set}, self.remove + other.remove)


def update_request(key: dict[str, Any], update: Update, condition: Condition) -> dict[str, Any]:
    """The keyword arguments of one guarded ``UpdateItem``."""
    names = dict(condition.names)
    values = dict(condition.values)
    clauses = []
    for i, (attribute, value) in enumerate(update.set.items()):
        names[f"#u{i}"], values[f":u{i}"] = attribute, attribute_value(value)
        clauses.append(f"#u{i} = :u{i}")
    expression = f"SET {', '.join(clauses)}" if clauses else ""
    if update.remove:
        removed = []
        for i, attribute in enumerate(update.remove):
            names[f"#r{i}"] = attribute
            removed.append(f"#r{i}")
        expression += f" REMOVE {', '.join(removed)}"
    request: dict[str, Any] = {
        "Key": key,
        "UpdateExpression": expression.strip(),
        "ConditionExpression": condition.expression,
        "ExpressionAttributeNames": names,
    }
    if values:
        request["ExpressionAttributeValues"] = values
    return request


def put_request(item: dict[str, Any], condition: Condition) -> dict[str, Any]:
    """The keyword arguments of one guarded ``PutItem``."""
    request: dict[str, Any] = {
        "Item": item,
        "ConditionExpression": condition.expression,
        "ExpressionAttributeNames": dict(condition.names),
    }
    if condition.values:
        request["ExpressionAttributeValues"] = dict(condition.values)
    return request
