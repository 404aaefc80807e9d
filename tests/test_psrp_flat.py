"""The messages every pool and pipeline receives alike -- SessionCapability, RunspacePoolState, PipelineState, byte
for byte the same from every server of a fleet -- are deserialized by pypsrp once; each later copy is a new object
equal to pypsrp's in every attribute. A message holding anything more than plain values goes through pypsrp each
time. The texts are [MS-PSRP]'s examples (2.2.2.1, 2.2.2.9, 2.2.2.21, 2.2.2.13)."""

from __future__ import annotations

from typing import Any

import pytest
from pypsrp.complex_objects import ObjectMeta
from pypsrp.messages import ApplicationPrivateData, PipelineState, RunspacePoolStateMessage, SessionCapability
from pypsrp.serializer import Serializer

from exbe.psrp_serializer import fast_serializer
from tests.psrp_values import as_seen

ALIKE = {
    "SessionCapability": (SessionCapability,
                          '<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version><Version N="PSVersion">2.0'
                          '</Version><Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>'),
    "RunspacePoolState Opened": (RunspacePoolStateMessage,
                                 '<Obj RefId="1"><MS><I32 N="RunspaceState">2</I32></MS></Obj>'),
    "PipelineState Completed": (PipelineState, '<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>'),
}
PRIVATE_DATA = ('<Obj RefId="0"><MS><Obj N="ApplicationPrivateData" RefId="1"><TN RefId="0"><T>System.Management.'
                'Automation.PSPrimitiveDictionary</T><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT>'
                '<En><S N="Key">BashPrivateData</S><Obj N="Value" RefId="2"><TNRef RefId="0" /><DCT><En><S N="Key">'
                'BashVersion</S><Version N="Value">2.0</Version></En></DCT></Obj></En></DCT></Obj></MS></Obj>')


@pytest.fixture
def pypsrp_reads(monkeypatch) -> list[str]:
    """Each typed object pypsrp's own code deserializes."""
    read: list[str] = []
    deserialize_obj = Serializer._deserialize_obj

    def counted(self: Any, element: Any, metadata: Any) -> Any:
        read.append(metadata.object.__name__)
        return deserialize_obj(self, element, metadata)

    monkeypatch.setattr(Serializer, "_deserialize_obj", counted)
    return read


def _received(serializer: Any, text: str, cls: type) -> Any:
    return serializer.deserialize(text, ObjectMeta("Obj", object=cls))


@pytest.mark.parametrize("cls, text", ALIKE.values(), ids=ALIKE.keys())
def test_a_message_every_server_sends_alike_is_deserialized_once_and_each_copy_is_pypsrps_object(pypsrp_reads, cls,
                                                                                                 text):
    reference = _received(Serializer(), text, cls)
    servers = [fast_serializer() for _ in range(3)]
    pypsrp_reads.clear()
    objects = [_received(serializer, text, cls) for serializer in servers]
    assert len(pypsrp_reads) <= 1  # the first server's, unless an earlier test of this process already read it
    for serializer, obj in zip(servers, objects, strict=True):
        assert as_seen(obj) == as_seen(reference)
        assert obj._xml == text
        assert serializer.obj == {text.split('"')[1]: obj}  # pypsrp's reference table, as pypsrp leaves it
    assert len({id(obj) for obj in objects}) == 3


def test_a_copy_changed_by_its_reader_leaves_the_next_copy_as_received():
    cls, text = ALIKE["PipelineState Completed"]
    first = _received(fast_serializer(), text, cls)
    first.state = 5
    first._extended_properties[0][1].name = "changed"
    assert as_seen(_received(fast_serializer(), text, cls)) == as_seen(_received(Serializer(), text, cls))


def test_a_message_holding_more_than_plain_values_goes_through_pypsrp_every_time(pypsrp_reads):
    reference = _received(Serializer(), PRIVATE_DATA, ApplicationPrivateData)
    pypsrp_reads.clear()
    for _ in range(3):
        assert as_seen(_received(fast_serializer(), PRIVATE_DATA, ApplicationPrivateData)) == as_seen(reference)
    assert pypsrp_reads == ["ApplicationPrivateData"] * 3


def test_a_message_with_an_error_record_goes_through_pypsrp_every_time(pypsrp_reads):
    failed = ('<Obj RefId="0"><MS><I32 N="PipelineState">3</I32><Obj N="ExceptionAsErrorRecord" RefId="1">'
              '<TN RefId="0"><T>System.Object</T></TN><ToString>stopped</ToString></Obj></MS></Obj>')
    reference = _received(Serializer(), failed, PipelineState)
    pypsrp_reads.clear()
    for _ in range(2):
        assert as_seen(_received(fast_serializer(), failed, PipelineState)) == as_seen(reference)
    assert pypsrp_reads.count("PipelineState") == 2
