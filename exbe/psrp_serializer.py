"""exbe's pypsrp ``Serializer``: the same values as pypsrp 0.9.1's, at a fraction of the cost (issue 26).

Every attribute a reader can see of what it hands back is what pypsrp's own serializer gives for the same input
(``tests/test_psrp_serializer.py`` checks generated CLIXML; ``tests/test_exchange_read.py`` the real shapes). What it
does differently, and why that cannot change a value:

* **Strings.** ASCII text (every rendered script) is escaped with a few ``str.replace`` calls instead of a Python
  callback per line break (2 ms for the bind script, 0.06 ms this way); a received string without ``_x`` has nothing
  to unescape.
* **Primitives** are converted directly, as pypsrp's own table does (:data:`_PRIMITIVES`).
* **pypsrp's type tables built once**, not at every call (:mod:`exbe.psrp_tables`).
* **Nothing received is written back to XML until it is read.** pypsrp's ``deserialize`` first writes every element
  it is given back to XML text (``ET.tostring``), at every level of nesting, keeps that text as ``_xml`` on each
  object and returns it as the value of an object whose type it does not know. Here pypsrp's own ``deserialize`` runs
  with an ElementTree whose ``tostring`` writes nothing (:class:`Unwritten` holds the element): an object of unknown
  type is written at once, because its text is its value; ``_xml`` is written when first read
  (:func:`_xml_written_when_read`). The elements are this serializer's own parse of a received message, which nothing
  else holds, so the text written later is the text pypsrp wrote at once. A tree a caller passes in (never exbe) may
  be changed after the call: it is written at once, as pypsrp does.
* **CreatePipeline** (the message that starts a pipeline) is written as text in one pass, the same bytes
  (:mod:`exbe.wsman_pipeline`); a shape that writer does not know (a SecureString parameter among them) goes through
  pypsrp's serializer.
* **The two messages that open a pool** (SessionCapability, InitRunspacePool) are written by pypsrp once per process
  for each set of values and their bytes reused: every pool exbe opens sends the same ones (no host, no application
  arguments), which pypsrp built and wrote with ElementTree four times per server.
* **Objects inside a received object** whose type names pypsrp resolves to its generic object (an Exchange object's
  enums, versions, identities: a dozen in each server object) go straight to pypsrp's ``_deserialize_dynamic_obj``:
  pypsrp's own resolution, from those type names alone, ran for the first of them (about 20 µs each).
* **Messages every pool and pipeline receives alike** (SessionCapability, RunspacePoolState, PipelineState) are
  deserialized by pypsrp once per text; an identical text is made again from what pypsrp did (:mod:`exbe.psrp_flat`).

pypsrp is imported when the first serializer is made, not with this module (start-up cost).
"""

from __future__ import annotations

import base64
import functools
import re
import types
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from .psrp_flat import FlatMessages
from .psrp_tables import tables_built_once
from .wsman_connection import tostring
from .wsman_pipeline import create_pipeline_xml

#: At most this many lists of type names remembered (an Exchange read has a few dozen).
MAX_TYPE_LISTS = 1024
#: What pypsrp's serializer writes for each ASCII control character in a string ([MS-PSRP] 2.2.5.3.2: ``_xHHHH_``,
#: the UTF-16 code unit in upper-case hex).
_CONTROL_ESCAPES = tuple((chr(code), f"_x{code:04X}_") for code in (*range(0x20), 0x7F))
_UNDERSCORE_X = re.compile("(?i)_(x)")


#: How pypsrp 0.9.1's ``Serializer.deserialize`` converts each primitive element ([MS-PSRP] 2.2.5.1); the other
#: elements (``C``, ``D``, ``XD``, ``SBK``, ``SS`` and every object) go through pypsrp itself.
_PRIMITIVES: dict[str, Callable[[Any, Any], Any]] = {
    "S": lambda s, e: s._deserialize_string(e.text),
    "ToString": lambda s, e: s._deserialize_string(e.text),
    "URI": lambda s, e: s._deserialize_string(e.text),
    "B": lambda s, e: e.text.lower() == "true",
    "DT": lambda s, e: e.text,
    "TS": lambda s, e: e.text,
    "Version": lambda s, e: e.text,
    **dict.fromkeys(("By", "SB", "U16", "I16", "U32", "I32", "U64", "I64"), lambda s, e: int(e.text)),
    "Sg": lambda s, e: float(e.text),
    "Db": lambda s, e: float(e.text),
    "BA": lambda s, e: base64.b64decode(e.text),
    "G": lambda s, e: uuid.UUID(e.text),
    "Nil": lambda s, e: None,
    "Ref": lambda s, e: s.obj[e.attrib["RefId"]],
}


class Unwritten:
    """A received element pypsrp asked to have written back to XML text, not written yet. pypsrp decodes the bytes
    it expects (``to_string``): decoding gives the same object, so the text stays unwritten."""

    __slots__ = ("element",)

    def __init__(self, element: ET.Element) -> None:
        self.element = element

    def decode(self, encoding: str = "utf-8") -> Unwritten:
        return self

    def written(self) -> str:
        """The text pypsrp would have kept: its ElementTree's UTF-8 bytes of the element, decoded."""
        written: bytes = tostring(self.element, encoding="utf-8", method="xml")
        return written.decode("utf-8")

    def __repr__(self) -> str:
        return f"<unwritten {self.element.tag} element>"


def fast_serializer() -> Any:
    """A pypsrp Serializer that gives the same values, faster where exbe's traffic spends its time (module doc)."""
    return _fast_serializer_class()()


@functools.cache
def _fast_serializer_class() -> Any:
    import pypsrp.serializer
    from pypsrp._utils import to_unicode
    from pypsrp.complex_objects import ComplexObject, GenericComplexObject, ObjectMeta
    from pypsrp.messages import CreatePipeline
    from pypsrp.serializer import Serializer

    opening_key = _pool_opening_key()
    opening_bytes: dict[tuple[Any, ...], bytes] = {}

    _xml_written_when_read(ComplexObject)
    deserialize_unwritten = _without_write_back(pypsrp.serializer)
    flat = FlatMessages(ObjectMeta)
    #: type names of an object inside a received one -> whether pypsrp makes it a GenericComplexObject (pypsrp decides
    #: from the type names alone when it is given no metadata: its type table, then System.Object's fallback)
    dynamic: dict[tuple[str, ...], bool] = {}

    class FastSerializer(Serializer):
        #: while a received message's text is deserialized: its elements are this serializer's own parse
        _own_tree = False

        def serialize(self, value: Any, metadata: Any = None, parent: Any = None, clear: bool = True) -> Any:
            if isinstance(value, CreatePipeline) and metadata is None and parent is None:
                written = create_pipeline_xml(value, self._serialize_string)
                if written is not None:
                    return written  # Message.pack sends bytes as they are
            elif clear and metadata is None and parent is None and (key := opening_key(value)) is not None:
                written = opening_bytes.get(key)
                if written is None:
                    element = super().serialize(value)  # None: no data, which Message.pack sends as b""
                    written = b"" if element is None else tostring(element, encoding="utf-8", method="xml")
                    opening_bytes[key] = written
                return written
            return super().serialize(value, metadata, parent, clear)

        def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
            if isinstance(element, str):  # a received message (its own text is its _xml)
                value = flat.made(self, element, metadata, clear)
                if value is not None:
                    return value
                outer, self._own_tree = self._own_tree, True
                try:
                    value = deserialize_unwritten(self, element, metadata, clear)
                finally:
                    self._own_tree = outer
                flat.learn(self, element, metadata, clear, value)
                return value
            convert = _PRIMITIVES.get(element.tag)
            if convert is None:
                if not self._own_tree:
                    return super().deserialize(element, metadata, clear)
                types = None
                if element.tag == "Obj" and metadata is None and not clear:  # an object inside a received one
                    types = tuple(self._get_types_from_obj(element))  # pypsrp's first step (it records them)
                    if dynamic.get(types):
                        return self._dynamic(element)
                value = deserialize_unwritten(self, element, metadata, clear)
                if type(value) is Unwritten:  # pypsrp knows no type for it: its XML text is its value
                    value = value.written()
                    if element.tag == "Obj":  # as pypsrp keeps it, for a later <Ref>
                        self.obj[element.attrib["RefId"]] = value
                if types is not None and len(dynamic) < MAX_TYPE_LISTS:
                    dynamic[types] = type(value) is GenericComplexObject
                return value
            if clear:
                self._clear()
            if metadata is not None and metadata.tag == "*":  # as pypsrp does: the caller's metadata learns the tag
                metadata.tag = element.tag
            return convert(self, element)

        def _dynamic(self, element: Any) -> Any:
            """The rest of pypsrp's ``deserialize`` for an object its type names made a ``GenericComplexObject``."""
            obj = self._deserialize_dynamic_obj(element, ObjectMeta("ObjDynamic", object=GenericComplexObject))
            self.obj[element.attrib["RefId"]] = obj
            obj._xml = Unwritten(element)
            return obj

        def _get_types_from_obj(self, element: Any) -> list[str]:
            # pypsrp's, with findall("TN/T") as the children it selects (ElementPath parses the path at every call)
            obj_types = [t.text or "" for tn in element if tn.tag == "TN" for t in tn if t.tag == "T"]
            if obj_types:
                self.tn[element.find("TN").attrib["RefId"]] = obj_types
            tn_ref = element.find("TNRef")
            if tn_ref is not None:
                obj_types = self.tn[tn_ref.attrib["RefId"]]
            return obj_types

        def _deserialize_string(self, value: str | None) -> str:
            if isinstance(value, str) and "_x" not in value:
                return value
            return super()._deserialize_string(value)

        def _serialize_secure_string(self, value: Any) -> str:
            # the second serialization of a shared command (Cmds, then ExtraCmds) finds the parameter's metadata
            # already tagged SS and the TaggedValue still wrapped
            return str(super()._serialize_secure_string(getattr(value, "value", value)))

        def _serialize_string(self, value: str | None) -> str | None:
            if value is None:
                return None
            text = to_unicode(value)
            if not text.isascii():
                return super()._serialize_string(value)
            text = _UNDERSCORE_X.sub("_x005F_\\1", text)
            for character, escaped in _CONTROL_ESCAPES:
                if character in text:
                    text = text.replace(character, escaped)
            return text

    return FastSerializer


def _pool_opening_key() -> Callable[[Any], tuple[Any, ...] | None]:
    """What the CLIXML of a pool's SessionCapability or InitRunspacePool depends on, for the shapes whose CLIXML
    depends on nothing else (every value a plain one, no host, no application arguments); None for anything else."""
    from pypsrp.complex_objects import ApartmentState, HostInfo, PSThreadOptions
    from pypsrp.messages import InitRunspacePool, SessionCapability

    plain = (str, int, bytes, type(None))

    def key(value: Any) -> tuple[Any, ...] | None:
        kind = type(value)
        if kind is SessionCapability:
            fields = (value.protocol_version, value.ps_version, value.serialization_version, value.time_zone)
        elif kind is InitRunspacePool:
            threads, apartment, host = value.thread_options, value.apartment_state, value.host_info
            if (type(threads) is not PSThreadOptions or type(apartment) is not ApartmentState
                    or type(host) is not HostInfo or host.host is not None or value.application_arguments is not None):
                return None
            fields = (value.min_runspaces, value.max_runspaces, threads.value, apartment.value)
        else:
            return None
        return (kind, *fields) if all(type(field) in plain for field in fields) else None

    return key


def _without_write_back(serializer_module: types.ModuleType) -> Callable[..., Any]:
    """pypsrp's own ``Serializer.deserialize``, the same code, run where ``ET.tostring`` gives an :class:`Unwritten`.

    pypsrp's deserialize uses its module's ``ET.tostring`` for that write-back only. Only this copy sees the
    ElementTree without it: pypsrp's ``Serializer`` (and every other use of ElementTree) writes as before."""
    pypsrp_deserialize = serializer_module.Serializer.deserialize
    element_tree = types.ModuleType(ET.__name__, ET.__doc__)
    element_tree.__dict__.update({name: value for name, value in vars(ET).items() if not name.startswith("__")})
    element_tree.tostring = lambda element, encoding=None, method=None: Unwritten(element)  # type: ignore[attr-defined]
    module_globals = {**vars(serializer_module), "ET": element_tree}
    built = tables_built_once(pypsrp_deserialize, module_globals)  # its lookup tables built once (exbe.psrp_tables)
    if built is not None:
        return built
    return types.FunctionType(pypsrp_deserialize.__code__, module_globals, pypsrp_deserialize.__name__,
                              pypsrp_deserialize.__defaults__, pypsrp_deserialize.__closure__)


def _xml_written_when_read(complex_object: type) -> None:
    """Make pypsrp's ``ComplexObject._xml`` a property that writes an :class:`Unwritten` value the first time it is
    read, and keeps the text. The value stays in the object's ``__dict__`` under ``_xml``, as before; any other value
    is stored and read back unchanged. Threads reading one object at once each write the same text."""

    def read(obj: Any) -> Any:
        try:
            value = obj.__dict__["_xml"]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute '_xml'") from None
        if type(value) is Unwritten:
            value = obj.__dict__["_xml"] = value.written()
        return value

    def write(obj: Any, value: Any) -> None:
        obj.__dict__["_xml"] = value

    complex_object._xml = property(read, write, doc="the object's CLIXML as received")  # type: ignore[attr-defined]
