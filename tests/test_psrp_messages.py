"""The PSRP messages exbe sends and reads are pypsrp's, byte for byte and attribute for attribute, though each pool's
and pipeline's id is parsed once rather than at every message (exbe/psrp_messages.py, issue 26)."""

from __future__ import annotations

import uuid
from typing import Any

from pypsrp.complex_objects import PSInvocationState
from pypsrp.messages import Message, PipelineState, RunspacePoolStateMessage
from pypsrp.powershell import Fragmenter
from pypsrp.serializer import Serializer

from exbe.psrp_messages import fast_fragmenter
from tests.psrp_values import pool_opening

POOL = str(uuid.UUID(int=0x1D)).upper()
PIPELINE = str(uuid.UUID(int=0x2E)).upper()


def _fragmenters(max_size: int = 153_600) -> tuple[Any, Any]:
    """pypsrp's fragmenter and exbe's, as exbe gives it to a pool (by class, after pypsrp made it)."""
    exbes = Fragmenter(max_size, Serializer())
    exbes.__class__ = fast_fragmenter()
    return Fragmenter(max_size, Serializer()), exbes


def _as_seen(message: Any) -> tuple[Any, ...]:
    data = message.data
    return (message.destination, message.message_type, message.rpid, message.pid, type(data).__name__,
            getattr(data, "state", None), getattr(data, "_xml", None))


def _server_answers(fragmenter: Any) -> bytes:
    """What a server sends back while a pool opens and a pipeline finishes, fragmented as pypsrp fragments."""
    pool_opened = RunspacePoolStateMessage(state=2)
    finished = PipelineState(state=PSInvocationState.COMPLETED)
    return b"".join([*fragmenter.fragment(pool_opened, POOL), *fragmenter.fragment(finished, POOL, PIPELINE),
                     *fragmenter.fragment(finished, POOL, PIPELINE)])


def test_a_pool_opens_with_the_fragments_pypsrp_writes_small_fragments_included():
    for max_size in (153_600, 200):  # 200: every message split across fragments
        theirs, ours = _fragmenters(max_size)
        assert ours.fragment_multiple(pool_opening(), POOL) == theirs.fragment_multiple(pool_opening(), POOL)
        assert ours.fragment(pool_opening()[0], POOL, PIPELINE) == theirs.fragment(pool_opening()[0], POOL, PIPELINE)


def test_a_servers_answers_are_read_as_pypsrp_reads_them():
    theirs, ours = _fragmenters()
    answers = _server_answers(Fragmenter(300, Serializer()))
    expected = [_as_seen(message) for message in theirs.defragment(answers)]
    read = ours.defragment(answers)
    assert [_as_seen(message) for message in read] == expected
    assert all(isinstance(message, Message) for message in read)


def test_each_pool_and_pipeline_id_is_parsed_once_for_all_its_messages():
    _, ours = _fragmenters()
    read = ours.defragment(_server_answers(Fragmenter(153_600, Serializer())))
    assert read[0].rpid is read[1].rpid is read[2].rpid, "one pool id object for the pool's messages"
    assert read[1].pid is read[2].pid and read[1].pid == uuid.UUID(PIPELINE)
    assert str(read[0].pid) == "00000000-0000-0000-0000-000000000000"
