"""Received PSRP messages whose object holds only plain values, deserialized once per text (issue 26).

Every pool a server opens answers with the same SessionCapability and RunspacePoolState texts, and every pipeline
ends with the same PipelineState text (``<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>``): a fleet's
servers of one Exchange version send these byte for byte alike, and pypsrp spends 50-70 µs on each (an ElementTree
parse, and an ElementPath query per property), eight per verified server. Such a message is one ``Obj`` element
without type names or references, and every property pypsrp reads from it is a string, number, boolean or nothing.
For exactly those, what pypsrp's ``deserialize`` does is remembered as data -- the class, the ``RefId``, each property
set, the ``ToString`` if there was one -- and done again for the next identical text: a new object of the class, its
values set as pypsrp set them, ``_xml`` the text, the serializer's reference table holding it. Nothing is shared
between two results but immutable values. Any other message (an error record, output objects, type names) goes
through pypsrp every time.
"""

from __future__ import annotations

from typing import Any

#: What a remembered property may hold: values nothing can change.
_PLAIN = (str, int, bool, float, type(None))
#: Texts longer than this are not remembered (the messages above are under 200 characters).
MAX_TEXT = 2048
#: At most this many texts remembered per process.
MAX_TEXTS = 256

_Recipe = tuple[type, str, tuple[tuple[str, Any], ...]]


class FlatMessages:
    """Texts already deserialized to a flat object, and how."""

    def __init__(self, object_meta: type) -> None:
        self._object_meta: Any = object_meta  # pypsrp's ObjectMeta
        self._recipes: dict[tuple[type, str], _Recipe] = {}

    def made(self, serializer: Any, text: str, metadata: Any, clear: bool) -> Any:
        """The object for ``text`` as pypsrp makes it, when ``text`` was seen before; else None."""
        recipe = self._recipes.get((metadata.object, text)) if self._message_call(metadata, clear) else None
        if recipe is None:
            return None
        serializer._clear()
        obj = _replayed(recipe, text)
        serializer.obj[recipe[1]] = obj
        return obj

    def learn(self, serializer: Any, text: str, metadata: Any, clear: bool, obj: Any) -> None:
        """Remember how ``obj`` was made from ``text`` if it is flat (module doc) and the recipe, replayed, makes
        an object equal to it attribute for attribute."""
        if not (self._message_call(metadata, clear) and type(obj) is metadata.object and len(text) <= MAX_TEXT
                and len(self._recipes) < MAX_TEXTS and len(serializer.obj) == 1 and not serializer.tn):
            return
        if text.count("<Obj") != 1 or "<Ref" in text or "<!" in text or "<?" in text:
            return  # one object, nothing referenced, no CDATA, comment or declaration to read around
        ((ref_id, made),) = serializer.obj.items()
        if made is not obj:
            return
        names = [name for properties in (obj._property_sets, obj._adapted_properties, obj._extended_properties)
                 for name, _ in properties]
        if "<ToString" in text:
            names.insert(0, "_to_string")  # pypsrp sets it first
        recipe: _Recipe = (type(obj), ref_id, tuple((name, getattr(obj, name)) for name in names))
        if all(type(value) in _PLAIN for _, value in recipe[2]) and _same(_replayed(recipe, text), obj):
            self._recipes[(metadata.object, text)] = recipe

    def _message_call(self, metadata: Any, clear: bool) -> bool:
        """A message's call: pypsrp's ``Message.unpack`` asks for ``ObjectMeta("Obj", object=<message class>)``."""
        return (clear and type(metadata) is self._object_meta and metadata.tag == "Obj" and metadata.name is None
                and isinstance(metadata.object, type))


def _replayed(recipe: _Recipe, text: str) -> Any:
    cls, _, values = recipe
    obj = cls()
    for name, value in values:
        setattr(obj, name, value)
    obj._xml = text
    return obj


def _same(one: Any, other: Any) -> bool:
    """Equal attribute for attribute, pypsrp's metadata objects compared by their own attributes."""
    return bool(_comparable(one) == _comparable(other))


def _comparable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value), [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return type(value), _comparable(vars(value))
    return value
