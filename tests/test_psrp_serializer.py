"""exbe's deserializer hands over exactly what pypsrp 0.9.1's does, and writes nothing back to XML that nobody reads
(issue 26: pypsrp writes every received element back to XML text, at every level of nesting).

An object of a type pypsrp does not know *is* its XML text, so that text is written at once; every object's raw XML
(``_xml``) is written when someone reads it, and is then the text pypsrp would have kept.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pypsrp.complex_objects import ComplexObject
from pypsrp.messages import Destination, Message, MessageType
from pypsrp.serializer import Serializer

from exbe import transport
from exbe.psrp_serializer import fast_serializer
from tests.psrp_values import as_seen, pool_opening
from tests.real_shapes import E16, exchange_certificate_clixml

CERTIFICATE = exchange_certificate_clixml(E16.cert("exchange"), shape="full")


@contextlib.contextmanager
def write_backs() -> Iterator[list[str]]:
    """The XML texts ElementTree writes meanwhile (every write-back goes through ``ET.tostring``)."""
    written: list[str] = []
    tostring = ET.tostring

    def recording(*args: Any, **kwargs: Any) -> Any:
        text = tostring(*args, **kwargs)
        written.append(text if isinstance(text, str) else text.decode("utf-8"))
        return text

    ET.tostring = recording
    try:
        yield written
    finally:
        ET.tostring = tostring


def received(xml_text: str, serializer: Any) -> Any:
    """``xml_text`` as a PIPELINE_OUTPUT message arrives from a server, unpacked by ``serializer``."""
    ids = uuid.uuid4().bytes_le + uuid.uuid4().bytes_le
    data = struct.pack("<II", Destination.CLIENT, MessageType.PIPELINE_OUTPUT) + ids + xml_text.encode()
    return Message.unpack(data, serializer).data.data


def within(value: Any) -> Iterator[Any]:
    """``value`` and every value within it (list items, dictionary keys and values, attributes), once each, without
    reading ``_xml``."""
    seen: set[int] = set()
    pending = [value]
    while pending:
        item = pending.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend([*item.keys(), *item.values()])
        elif hasattr(item, "__dict__"):
            pending.extend(v for k, v in vars(item).items() if k != "_xml")


def nested_objects(value: Any) -> list[ComplexObject]:
    return [item for item in within(value) if isinstance(item, ComplexObject)]


# -- a received certificate -----------------------------------------------------------------------------------------
def test_a_received_certificate_is_not_written_back_to_xml_until_its_xml_is_read():
    transport.preload()  # as in a run: pypsrp's modules see exbe's ElementTree
    with write_backs() as written:
        certificate = received(CERTIFICATE, fast_serializer())
    assert written == []
    reference = received(CERTIFICATE, Serializer())
    inner = nested_objects(certificate)[1:]  # the message's own object keeps the message's text
    assert inner, "the full certificate carries nested objects (its Services enum at least)"
    with write_backs() as written:
        texts = [obj._xml for obj in inner]
        again = [obj._xml for obj in inner]
    assert len(written) == len(inner)  # each written once, when read
    assert texts == again == [obj._xml for obj in nested_objects(reference)[1:]]
    assert certificate._xml == reference._xml == CERTIFICATE
    assert as_seen(certificate) == as_seen(reference)


def test_a_received_certificate_builds_no_type_table_for_each_object_in_it(monkeypatch):
    """pypsrp builds its table of ~60 .NET types (each entry constructed) for every object it deserializes; exbe's
    copy of pypsrp's code constructs only the entry it looks up, and hands over the same value."""
    import pypsrp.complex_objects

    made: list[str] = []
    original = pypsrp.complex_objects.ObjectMeta.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(pypsrp.complex_objects.ObjectMeta, "__init__", counted)
    reference = received(CERTIFICATE, Serializer())
    by_pypsrp, made[:] = len(made), []
    certificate = received(CERTIFICATE, fast_serializer())
    assert as_seen(certificate) == as_seen(reference)
    assert by_pypsrp > 10 * len(nested_objects(reference)), "pypsrp: a whole table per object"
    assert len(made) * 10 < by_pypsrp, (len(made), by_pypsrp)


def test_pypsrps_deserialize_runs_as_it_is_where_its_tables_cannot_be_found():
    """A pypsrp whose deserialize has another shape, or no source to read, is run as it is (None: no stand-in)."""
    import pypsrp.serializer

    from exbe.psrp_tables import tables_built_once

    namespace = dict(vars(pypsrp.serializer))
    built = tables_built_once(Serializer.deserialize, namespace)
    assert built is not None and built.__code__.co_filename == Serializer.deserialize.__code__.co_filename
    assert built.__code__.co_firstlineno == Serializer.deserialize.__code__.co_firstlineno, "tracebacks: pypsrp's lines"
    assert tables_built_once(Serializer._deserialize_obj, namespace) is None, "no tables in it"
    exec("def deserialize(self, element):\n    structures = {}\n    return structures.get(element)\n", namespace)
    assert tables_built_once(namespace["deserialize"], namespace) is None, "no source file to read"


def test_threads_reading_one_objects_xml_at_once_all_get_pypsrps_text():
    certificates = [received(CERTIFICATE, fast_serializer()) for _ in range(4)]
    expected = [obj._xml for obj in nested_objects(received(CERTIFICATE, Serializer()))]
    start = threading.Barrier(8)
    seen: list[list[str]] = []

    def read(certificate: Any) -> None:
        start.wait()
        seen.append([obj._xml for obj in nested_objects(certificate)])

    threads = [threading.Thread(target=read, args=(certificates[n % 4],)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can, mid-write included
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen == [expected] * 8


def test_pypsrps_own_serializer_beside_exbes_still_returns_an_unknown_object_as_its_text():
    fast_serializer()
    transport.preload()
    text = ('<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><MS><Obj N="cert" RefId="1"><TN RefId="1">'
            '<T>Microsoft.Exchange.Certificate</T></TN><ToString>c</ToString></Obj></MS></Obj>')
    value = Serializer().deserialize(text)
    assert value.extended_properties["cert"] == ('<Obj N="cert" RefId="1"><TN RefId="1"><T>Microsoft.Exchange.'
                                                 'Certificate</T></TN><ToString>c</ToString></Obj>')
    assert vars(value)["_xml"] == text


def test_a_tree_handed_in_by_a_caller_is_written_as_it_was_then():
    root = ET.fromstring(CERTIFICATE)
    certificate = fast_serializer().deserialize(root)
    reference = Serializer().deserialize(ET.fromstring(CERTIFICATE))
    for element in root.iter():
        element.set("changed", "after")
    assert as_seen(certificate) == as_seen(reference)


def _packed(serializer: Any, data: Any) -> bytes:
    return bytes(Message(Destination.SERVER, str(uuid.UUID(int=1)), None, data, serializer).pack())


def test_every_pool_opens_with_pypsrps_bytes_written_once_per_process(monkeypatch):
    """Each pool exbe opens sends pypsrp's SessionCapability and InitRunspacePool, byte for byte; pypsrp writes them
    once per process for each set of values, not at every pool (two pools per server)."""
    fast = fast_serializer()
    for max_runspaces in (1, 5):
        expected = [_packed(Serializer(), data) for data in pool_opening(max_runspaces=max_runspaces)]
        assert [_packed(fast, data) for data in pool_opening(max_runspaces=max_runspaces)] == expected
    written: list[str] = []
    serialize = Serializer.serialize

    def counted(self: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        written.append(type(value).__name__)
        return serialize(self, value, *args, **kwargs)

    monkeypatch.setattr(Serializer, "serialize", counted)
    again = [_packed(fast_serializer(), data) for data in pool_opening(max_runspaces=5)]
    assert again == expected and written == []


def test_a_pool_with_a_host_or_application_arguments_is_written_by_pypsrp_each_time():
    from pypsrp.host import PSHost

    host = PSHost(None, None, False, "exbe", None, None, "1.0")
    for opening in (pool_opening(host=host), pool_opening(arguments={"ticket": "CHG0042"})):
        assert [_packed(fast_serializer(), data) for data in opening] == [
            _packed(Serializer(), data) for data in opening]


# -- generated CLIXML -----------------------------------------------------------------------------------------------
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8).map(Serializer()._serialize_string)
NAME = st.text("Nm _x0", min_size=1, max_size=4)
PRIMITIVE = st.one_of(
    st.tuples(st.sampled_from(["S", "URI", "XD", "SBK"]), TEXT),
    st.tuples(st.sampled_from(["By", "SB", "U16", "I16", "U32", "I32", "U64", "I64"]),
              st.integers(-(2**63), 2**64).map(str)),
    st.tuples(st.just("B"), st.sampled_from(["true", "false", "True"])),
    st.tuples(st.sampled_from(["DT", "TS", "Version", "D"]),
              st.sampled_from(["2030-01-01T10:00:00.1234567+01:00", "PT9.0269026S", "15.2.1544.4", "1.50"])),
    st.tuples(st.sampled_from(["Sg", "Db"]), st.floats(allow_nan=False, allow_infinity=False).map(repr)),
    st.tuples(st.just("BA"), st.binary(min_size=1, max_size=8).map(lambda b: base64.b64encode(b).decode())),
    st.tuples(st.just("G"), st.uuids().map(str)),
    st.tuples(st.just("C"), st.integers(0, 0xFFFF).map(str)),
    st.tuples(st.just("Nil"), st.none()),
).map(lambda tag_text: ("primitive", *tag_text))

#: Type name lists: a dynamic object (PSCustomObject, no types at all, Deserialized.), one pypsrp does not know (its
#: value is its XML text; System.String is known, but as a primitive, so the same), a list, a dictionary.
DYNAMIC_TYPES = [("System.Management.Automation.PSCustomObject", "System.Object"), (), ("Deserialized.System.Object",),
                 ("Selected.Microsoft.Exchange.Certificate", "System.Management.Automation.PSCustomObject",
                  "System.Object")]
UNKNOWN_TYPES = [("Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",),
                 ("Deserialized.System.Security.Cryptography.X509Certificates.X500DistinguishedName",
                  "Deserialized.System.Security.Cryptography.AsnEncodedData"), ("System.String",)]
LIST_TYPES = [("System.Collections.ArrayList", "System.Object"), ("System.Object[]", "System.Array", "System.Object"),
              ("System.String[]", "System.Array", "System.Object"),
              ("System.Collections.Generic.List`1[[System.Int32, mscorlib, Version=4.0.0.0]]", "System.Object")]
DICT_TYPES = [("System.Collections.Hashtable", "System.Object"),
              ("System.Collections.Generic.Dictionary`2[[System.String, mscorlib],[System.Object, mscorlib]]",
               "System.Object"), ("Deserialized.System.Collections.Hashtable", "Deserialized.System.Object")]
#: A TN of its own, or a TNRef to one written before (the number picks which).
TYPES = st.one_of(st.sampled_from(DYNAMIC_TYPES).map(lambda t: ("TN", t)),
                  st.sampled_from(UNKNOWN_TYPES).map(lambda t: ("TN", t)),
                  st.sampled_from(LIST_TYPES + DICT_TYPES).map(lambda t: ("TN", t)),
                  st.integers(0, 20).map(lambda n: ("TNRef", n)))
#: A child an object's property set may carry that is no CLIXML at all: another namespace, an xml: attribute.
FOREIGN = st.just(("foreign",))


def MOSTLY_THERE(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:  # noqa: N802 - reads as a strategy
    """A mandatory property's value, or once in a while none (pypsrp raises; exbe must raise the same)."""
    return st.one_of(values, values, values, st.none())


def nodes(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    named = st.lists(st.tuples(NAME, inner), max_size=3)
    unknown_leaf = st.tuples(st.just("object"), st.sampled_from(UNKNOWN_TYPES).map(lambda t: ("TN", t)),
                             st.none() | TEXT, st.just([]), st.lists(st.tuples(NAME, PRIMITIVE), max_size=2),
                             st.just([]))
    key = st.none() | PRIMITIVE | unknown_leaf  # a dictionary key that hashes by value, or none at all
    return st.one_of(
        st.tuples(st.just("object"), TYPES, st.none() | TEXT, named, named, st.lists(inner | FOREIGN, max_size=2)),
        st.tuples(st.just("list"), st.sampled_from(LIST_TYPES), st.lists(inner, max_size=3)),
        st.tuples(st.just("dict"), st.sampled_from(DICT_TYPES), st.lists(st.tuples(key, st.none() | inner),
                                                                          max_size=3)),
        st.tuples(st.just("enum"), MOSTLY_THERE(st.integers(0, 20))),
        st.tuples(st.just("coordinates"), MOSTLY_THERE(st.integers()), MOSTLY_THERE(st.integers())),
        st.tuples(st.just("Ref"), st.integers(0, 50)),
    )


#: A received object: any of the above, anything within.
DOCUMENTS = nodes(st.recursive(PRIMITIVE, nodes, max_leaves=12))


class Writer:
    """Writes a generated node as CLIXML: RefIds in document order, each ``<Ref>`` to an object already complete."""

    def __init__(self) -> None:
        self.objects = 0
        self.complete: list[str] = []
        self.type_lists: list[str] = []

    def document(self, node: Any) -> str:
        holder = ET.Element("holder")
        self.write(holder, None, node)
        return ET.tostring(holder[0], encoding="unicode")

    def write(self, parent: ET.Element, name: str | None, node: Any) -> None:
        kind, *rest = node
        if kind == "primitive":
            element = ET.SubElement(parent, rest[0])
            element.text = rest[1]
        elif kind == "foreign":
            element = ET.SubElement(parent, "{urn:example:foreign}Extra", {"{http://www.w3.org/XML/1998/namespace}lang":
                                                                           "en"})
            element.text = "not CLIXML"
        elif kind == "Ref" and self.complete:
            element = ET.SubElement(parent, "Ref", RefId=self.complete[rest[0] % len(self.complete)])
        elif kind == "Ref":
            element = ET.SubElement(parent, "Nil")
        else:
            element = self.object(parent, kind, rest)
        if name is not None:
            element.set("N", name)

    def object(self, parent: ET.Element, kind: str, rest: list[Any]) -> ET.Element:
        ref_id = str(self.objects)
        self.objects += 1
        element = ET.SubElement(parent, "Obj", RefId=ref_id)
        if kind == "object":
            types, to_string, adapted, extended, others = rest
            self.types(element, types)
            if to_string is not None:
                ET.SubElement(element, "ToString").text = to_string
            for tag, members in (("Props", adapted), ("MS", extended)):
                if members:
                    holder = ET.SubElement(element, tag)
                    for member_name, member in members:
                        self.write(holder, member_name, member)
            for other in others:
                self.write(element, None, other)
        elif kind == "list":
            self.types(element, ("TN", rest[0]))
            items = ET.SubElement(element, "LST")
            for item in rest[1]:
                self.write(items, None, item)
        elif kind == "dict":
            self.types(element, ("TN", rest[0]))
            entries = ET.SubElement(element, "DCT")
            for key, value in rest[1]:
                entry = ET.SubElement(entries, "En")
                for entry_name, part in (("Key", key), ("Value", value)):
                    if part is not None:
                        self.write(entry, entry_name, part)
        elif kind == "enum":
            self.types(element, ("TN", ("System.ConsoleColor", "System.Enum", "System.ValueType", "System.Object")))
            ET.SubElement(element, "ToString").text = "Red"
            if rest[0] is not None:
                ET.SubElement(element, "I32").text = str(rest[0])
        else:  # coordinates: a typed object whose properties are mandatory
            self.types(element, ("TN", ("System.Management.Automation.Host.Coordinates", "System.ValueType")))
            props = ET.SubElement(element, "Props")
            for axis, value in zip("XY", rest, strict=True):
                if value is not None:
                    ET.SubElement(props, "I32", N=axis).text = str(value)
        self.complete.append(ref_id)
        return element

    def types(self, element: ET.Element, types: tuple[str, Any]) -> None:
        how, which = types
        if how == "TNRef" and self.type_lists:
            ET.SubElement(element, "TNRef", RefId=self.type_lists[which % len(self.type_lists)])
        elif how == "TN" and which:
            type_list = ET.SubElement(element, "TN", RefId=str(len(self.type_lists)))
            self.type_lists.append(type_list.attrib["RefId"])
            for name in which:
                ET.SubElement(type_list, "T").text = name


class Returning(Serializer):
    """pypsrp's own serializer, noting each value its ``deserialize`` hands back (nested calls included)."""

    def __init__(self) -> None:
        super().__init__()
        self.returned: list[Any] = []

    def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
        value = super().deserialize(element, metadata, clear)
        self.returned.append(value)
        return value


def outcome(value: Any) -> Any:
    if isinstance(value, Exception):
        return ("raised", type(value).__name__, str(value))
    return ("value", as_seen(value))


def deserialized(serializer: Any, xml_text: str) -> Any:
    try:
        return serializer.deserialize(xml_text)
    except Exception as exc:  # noqa: BLE001 - an error pypsrp raises is part of what must be the same
        return exc


@settings(max_examples=300)
@given(DOCUMENTS)
def test_any_clixml_is_deserialized_as_pypsrp_does_writing_only_the_xml_that_is_a_value(node):
    xml_text = Writer().document(node)
    pypsrp = Returning()
    reference = deserialized(pypsrp, xml_text)
    with write_backs() as written:
        exbe = deserialized(fast_serializer(), xml_text)
    values = {value for value in pypsrp.returned if isinstance(value, str)}
    assert set(written) <= values, "XML written back that pypsrp hands over as no value (an object's _xml, unread)"
    assert outcome(exbe) == outcome(reference)
