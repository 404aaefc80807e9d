"""What a reader can see of a value pypsrp's deserializer (or exbe's) hands over, to compare the two."""

from __future__ import annotations

from typing import Any


def as_seen(value: Any) -> Any:
    """Everything a reader can see of a deserialized value (types, properties, ToString, nested objects, raw XML),
    each attribute read as a reader reads it (exbe writes ``_xml`` when it is first read)."""
    if isinstance(value, list):
        return [as_seen(v) for v in value]
    if isinstance(value, tuple):  # a typed object's property table (pypsrp's ObjectMeta entries)
        return ("tuple", [as_seen(v) for v in value])
    if isinstance(value, dict):
        return {k: as_seen(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return (type(value).__name__, {name: as_seen(getattr(value, name)) for name in vars(value)})
    return (type(value).__name__, value)
