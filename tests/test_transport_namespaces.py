"""Every WSMan envelope exbe sends is well-formed XML, however many servers' connections are being opened at the same
moment (issue 26, item 1).

pypsrp 0.9.1 registers ElementTree's process-wide namespace prefixes each time a ``WSMan`` is built; registering
first deletes the entry, so a thread writing an envelope at that instant finds no prefix for the XML namespace and
declares ``xmlns:ns0="http://www.w3.org/XML/1998/namespace"``, which XML forbids (a server refuses the request, and
one server of a fleet was reported unreachable for it). Here threads open connections (build ``WSMan`` objects
through exbe's own construction path) while others write envelopes; every envelope must parse.
"""

from __future__ import annotations

import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from exbe import transport, wsman_connection
from exbe.config import Credentials
from exbe.inventory import load_inventory
from exbe.redaction import Secret

BUILDS = 3000  # WSMan objects built per building thread
ENVELOPES = 6000  # envelopes written per writing thread
SERVER = {"name": "exch01", "host": "exch01.contoso.test", "auth": "ntlm"}


@pytest.fixture
def fine_thread_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that the window is hit within a bounded loop."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_envelopes_stay_well_formed_while_other_servers_connect(fine_thread_switching):
    transport.preload()
    server = load_inventory({"inventory": [SERVER]})[0]
    session = transport.Session(server, Credentials("CONTOSO\\admin", Secret("pw")))
    writer_wsman = session._wsman("winrm")
    bad: list[str] = []
    written = [0]

    def build() -> None:
        for _ in range(BUILDS):
            session._wsman("exchange")

    def write() -> None:
        for _ in range(ENVELOPES):
            _, header = writer_wsman._create_header("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
                                                    "http://schemas.microsoft.com/powershell/Microsoft.PowerShell")
            envelope = ET.Element("{http://www.w3.org/2003/05/soap-envelope}Envelope")
            envelope.append(header)
            text = ET.tostring(envelope, encoding="utf-8", method="xml")
            written[0] += 1
            try:
                ET.fromstring(text)
            except ET.ParseError:
                bad.append(text.decode())

    threads = [threading.Thread(target=build) for _ in range(2)] + [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert written[0] == 2 * ENVELOPES
    assert bad == [], f"{len(bad)} of {written[0]} envelopes were not well-formed XML, e.g. {bad[0][:400]}"


@pytest.mark.parametrize("text", ["plain", "Zürich – 東京 😀", "lone \ud800 surrogate", "<&>\"'\r\n\t"],
                         ids=["ascii", "non-ascii", "surrogate", "markup"])
def test_pypsrp_writes_the_same_bytes_as_elementtree(text):
    """The faster tostring pypsrp's modules get is byte for byte ElementTree's (a lone surrogate included)."""
    transport.preload()
    envelope = ET.Element("{http://www.w3.org/2003/05/soap-envelope}Envelope")
    body = ET.SubElement(envelope, "{http://www.w3.org/2003/05/soap-envelope}Body",
                         {"{http://www.w3.org/XML/1998/namespace}lang": text})
    ET.SubElement(body, "S", N=text).text = text
    assert wsman_connection.tostring(envelope, encoding="utf-8", method="xml") == ET.tostring(
        envelope, encoding="utf-8", method="xml")
    import pypsrp.messages
    import pypsrp.serializer
    import pypsrp.wsman

    for module in (pypsrp.wsman, pypsrp.messages, pypsrp.serializer):
        assert module.ET.tostring is wsman_connection.tostring  # type: ignore[attr-defined]
