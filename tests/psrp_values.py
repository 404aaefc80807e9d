"""What a reader can see of a value pypsrp's deserializer (or exbe's) hands over, to compare the two; the messages
that open a pool, as pypsrp builds them."""

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


def pool_opening(host: Any = None, arguments: Any = None, max_runspaces: int = 1) -> list[Any]:
    """The two messages pypsrp's ``RunspacePool.open`` sends, built as it builds them."""
    from pypsrp.complex_objects import ApartmentState, HostInfo, PSThreadOptions
    from pypsrp.messages import InitRunspacePool, SessionCapability
    from pypsrp.powershell import PROTOCOL_VERSION, PS_VERSION, SERIALIZATION_VERSION

    return [SessionCapability(PROTOCOL_VERSION, PS_VERSION, SERIALIZATION_VERSION),
            InitRunspacePool(1, max_runspaces, PSThreadOptions(value=0), ApartmentState(value=2), HostInfo(host=host),
                             arguments)]
