"""The message that starts each of exbe's pipelines reaches the server byte for byte as pypsrp would write it, though
exbe writes it as text (issue 26): scripts and cmdlets, one statement or a batch, every kind of parameter value exbe
passes; and what the text writer does not know -- a SecureString, a positional argument, an older protocol -- is
written by pypsrp itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypsrp.complex_objects import CommandParameter
from pypsrp.messages import Destination, Message
from pypsrp.powershell import PowerShell
from pypsrp.serializer import Serializer, TaggedValue

from exbe import transport
from exbe.psrp_serializer import fast_serializer
from exbe.redaction import Secret
from exbe.render import render_step
from exbe.wsman_pipeline import create_pipeline_xml

FAST = fast_serializer()
REFERENCE = Serializer()

class _Pool:
    """What pypsrp's PowerShell reads of its runspace pool while a pipeline is built and its message written."""

    def __init__(self, protocol_version: str) -> None:
        self.id = str(uuid.uuid4()).upper()
        self.host = None
        self.apartment_state = 2
        self.protocol_version = protocol_version
        self.pipelines: dict[str, Any] = {}
        self._serializer = FAST


@pytest.fixture(scope="module", autouse=True)
def _preloaded() -> None:
    transport.preload()


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build a pipeline through exbe's Session (its run_scripts or run_cmdlets, its PowerShell class) and catch the
    CreatePipeline message pypsrp would send. ``statements``: scripts (str), or statements of (cmdlet, parameters)."""
    sent: list[Any] = []
    monkeypatch.setattr(PowerShell, "_invoke", lambda self, msg: sent.append((self, msg)))

    def build(statements: list[Any], protocol_version: str = "2.3") -> tuple[Any, Any]:
        ps = transport._shared_powershell()(_Pool(protocol_version))
        session = transport.Session.__new__(transport.Session)
        session._invoke = lambda endpoint, build, *, repeatable, secure=False: (  # type: ignore[method-assign]
            transport._secure_values(build) if secure else build)(ps)
        if all(isinstance(statement, str) for statement in statements):
            session.run_scripts(statements)
        else:
            session.run_cmdlets(statements)
        ps.begin_invoke()
        return sent.pop()

    yield build


def _clixml(owner: Any, message: Any, serializer: Serializer) -> bytes:
    """The message as packed for the wire, after its header (destination, type, pool and pipeline ids)."""
    return bytes(Message(Destination.SERVER, owner.runspace_pool.id, owner.id, message, serializer).pack())[40:]


def _assert_same_bytes(build: Any, *, written_as_text: bool) -> None:
    """Each serializer gets a message of its own (other ids, so the header is left out): pypsrp's writes a
    TaggedValue's tag into the parameter's metadata the first time, so a message is meant to be written once."""
    owner, message = build()
    assert (create_pipeline_xml(message, FAST._serialize_string) is not None) is written_as_text
    assert _clixml(owner, message, FAST) == _clixml(*build(), REFERENCE)


_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_values = st.one_of(st.none(), st.booleans(), st.integers(-2**31, 2**31 - 1), _names, st.lists(_names, max_size=3))
_commands = st.tuples(_names, st.dictionaries(_names.filter(bool), _values, max_size=4))
_statements = st.one_of(st.lists(_names, min_size=1, max_size=3),
                        st.lists(st.lists(_commands, min_size=1, max_size=3), min_size=1, max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statements=_statements, protocol_version=st.sampled_from(["2.2", "2.3"]))
def test_any_batch_of_plain_commands_is_written_as_pypsrp_writes_it(messages, statements, protocol_version):
    _assert_same_bytes(lambda: messages(statements, protocol_version), written_as_text=True)


def test_exbes_rendered_scripts_and_exchange_reads_are_written_as_text_and_match(messages):
    facts = render_step("facts", {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
                                  "friendly_name": "Microsoft _x000A_ Exchange <&>"})
    _assert_same_bytes(lambda: messages([facts, "$x = 1\r\n\t'é'"]), written_as_text=True)
    reads = [[("Get-ExchangeCertificate", {"Server": "EX01"}),
              ("Select-Object", {"Property": ["Thumbprint", "Services"], "First": 5})],
             [("Get-AuthConfig", {})]]
    _assert_same_bytes(lambda: messages(reads), written_as_text=True)


@pytest.mark.parametrize("statements, protocol_version", [
    ([[("ConvertTo-SecureString", {"SecureString": TaggedValue("S", "plain")})]], "2.3"),
    ([[("Set-Thing", {"Map": {"a": 1}})]], "2.3"),
    ([[("Set-Thing", {"Size": 1.5})]], "2.3"),
    ([[("Set-Thing", {"Many": [1, 2]})]], "2.3"),
    ([[("Get-Thing", {})]], "2.1"),
], ids=["tagged value", "dictionary", "float", "list of integers", "protocol 2.1"])
def test_what_the_text_writer_does_not_know_goes_through_pypsrp(messages, statements, protocol_version):
    _assert_same_bytes(lambda: messages(statements, protocol_version), written_as_text=False)


def test_a_secure_string_parameter_is_left_to_pypsrp(messages):
    """A SecureString needs the session key pypsrp holds (pool.exchange_keys()): never written as text."""
    owner, message = messages([[("Import-Thing", {"Password": Secret("secret")})]])
    assert isinstance(message.pipeline.commands[0].args[0].value, TaggedValue)
    assert create_pipeline_xml(message, FAST._serialize_string) is None


def test_a_positional_argument_is_left_to_pypsrp(messages):
    def build() -> tuple[Any, Any]:
        owner, message = messages([[("Get-Thing", {})]])
        message.pipeline.commands[0].args = [CommandParameter(value="positional")]  # what add_argument() adds
        return owner, message
    _assert_same_bytes(build, written_as_text=False)
