"""Every WSMan envelope exbe writes as text is, byte for byte, what pypsrp's ``WSMan.invoke`` writes for that request
(exbe/wsman_envelope.py): over every request of real runs on the sandbox, and over values that need escaping."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan

from exbe import wsman_envelope
from exbe.wsman_connection import new_wsman

from .conftest import PASSWORD, USERNAME


class _Sent(Exception):
    def __init__(self, message: bytes) -> None:
        self.message = message


class _Capture:
    """A transport that keeps the envelope instead of sending it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def send(self, message: bytes, **kwargs: Any) -> bytes:
        raise _Sent(message)

    def close(self) -> None:
        pass


def pypsrp_writes(wsman: Any, message_id: str, *args: Any) -> bytes:
    """The envelope pypsrp's own ``invoke`` writes for ``args`` now, its random MessageID replaced by ``message_id``."""
    real = wsman.transport
    wsman.transport = _Capture(real.endpoint)
    try:
        WSMan.invoke(wsman, *args)
    except _Sent as sent:
        theirs = re.search(rb"<wsa:MessageID>uuid:([0-9A-F-]+)</wsa:MessageID>", sent.message)
        assert theirs is not None
        return sent.message.replace(theirs.group(1), message_id.encode(), 1)
    finally:
        wsman.transport = real
    raise AssertionError("pypsrp sent nothing")


def test_every_request_of_real_runs_is_written_as_pypsrp_writes_it(start_fleet, exbe, monkeypatch, tmp_path):
    compared: list[str] = []
    envelope = wsman_envelope.envelope

    def compared_with_pypsrp(wsman: Any, names: Any, *args: Any) -> bytes:
        xml = envelope(wsman, names, *args)
        if not isinstance(wsman, WSMan):  # the mock envelope of the largest-payload arithmetic, never sent
            return xml
        *request, message_id = args
        assert xml == pypsrp_writes(wsman, message_id, *request), request[0]  # as the request is sent
        compared.append(request[0].rsplit("/", 1)[-1])
        return xml

    monkeypatch.setattr(wsman_envelope, "envelope", compared_with_pypsrp)
    fleet = start_fleet([("exch01", "backend_expiring"), ("exch02", "healthy")])
    assert exbe(fleet, "renew", "--all").code == 0
    assert exbe(fleet, "verify", "--all").code == 0
    assert {"Create", "Command", "Receive", "Delete"} <= set(compared), set(compared)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(option=_TEXT, selector=_TEXT, body=_TEXT, locale=st.sampled_from(["en-US", 'x"<&>\n\t\r']),
       timeout=st.one_of(st.none(), st.integers(1, 3600)))
def test_values_that_need_escaping_are_written_as_pypsrp_writes_them(option, selector, body, locale, timeout):
    wsman = new_wsman("exch01.contoso.com", port=5985, path="wsman", ssl=False, auth="ntlm", username=USERNAME,
                      password=PASSWORD, locale=locale)
    options = OptionSet()
    options.add_option("WINRS_NOPROFILE", option, {"MustComply": "true"})
    selectors = SelectorSet()
    selectors.add_option("ShellId", selector)
    rsp = NAMESPACES["rsp"]
    resource = ET.Element(f"{{{rsp}}}Receive")
    ET.SubElement(resource, f"{{{rsp}}}DesiredStream", CommandId=selector).text = body
    message_id = str(uuid.UUID(int=7)).upper()
    args = ("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "http://schemas.microsoft.com/x", resource,
            options, selectors, timeout)
    names = {p: NAMESPACES[p] for p in ("s", "wsa", "wsman", "wsmv")}
    assert wsman_envelope.envelope(wsman, names, *args, message_id) == pypsrp_writes(wsman, message_id, *args)


def test_a_name_in_a_namespace_nobody_registered_is_left_to_pypsrp(monkeypatch):
    wsman = new_wsman("exch01", port=5985, path="wsman", ssl=False, auth="ntlm", username=USERNAME,
                      password=PASSWORD)
    sent: list[bytes] = []
    wsman.transport = _Capture(wsman.transport.endpoint)
    wsman.transport.send = lambda message, **kw: sent.append(message) or (_ for _ in ()).throw(_Sent(message))
    stranger = ET.Element("{urn:nobody-registered-this}Thing")
    with pytest.raises(_Sent):
        wsman.invoke("urn:action", "urn:resource", stranger)
    assert re.search(rb'xmlns:ns[0-9]+="urn:nobody-registered-this"', sent[0]), "ElementTree invented a prefix"


@pytest.mark.parametrize(("host", "port", "path", "ssl", "locale", "operation_timeout"), [
    ("exch01", 5985, "wsman", False, "en-US", 20),
    ("exch01.contoso.com", 443, "PowerShell", True, "de-DE", 3600),
    ("[fd00::1]", 5986, "wsman", True, 'x"<&>', 7),
    ("exch02", 80, "PowerShell?SerializationLevel=Full&a=<b>", False, "en-US", 20),
])
@pytest.mark.parametrize("server_limit", [153_600, 512_000, 8_192_000])
def test_the_largest_payload_an_envelope_carries_is_pypsrps_figure(host, port, path, ssl, locale, operation_timeout,
                                                                    server_limit):
    """What a PSRP fragment may fill is worked out from pypsrp's mock envelope written as text: the same figure
    pypsrp's ElementTree gives, when the WSMan is built and when the server's limit is learnt."""
    options = dict(port=port, path=path, ssl=ssl, auth="ntlm", username=USERNAME, password=PASSWORD, locale=locale,
                   operation_timeout=operation_timeout)
    ours = new_wsman(host, **options)
    theirs = WSMan(host, **options)
    assert type(ours) is not WSMan and ours.max_payload_size == theirs.max_payload_size
    ours.update_max_payload_size(server_limit)
    theirs.update_max_payload_size(server_limit)
    assert (ours.max_envelope_size, ours.max_payload_size) == (theirs.max_envelope_size, theirs.max_payload_size)


class _Answering(_Capture):
    """A transport that answers each envelope with a Header whose RelatesTo is ``relate(message id sent)``."""

    def __init__(self, endpoint: str, relate: Any) -> None:
        super().__init__(endpoint)
        self.relate = relate

    def send(self, message: bytes, **kwargs: Any) -> bytes:
        sent = re.search(rb"<wsa:MessageID>(uuid:[0-9A-F-]+)</wsa:MessageID>", message)
        assert sent is not None
        return (f'<s:Envelope xmlns:s="{NAMESPACES["s"]}" xmlns:wsa="{NAMESPACES["wsa"]}"><s:Header>'
                f'<wsa:Action>urn:answer</wsa:Action><wsa:RelatesTo>{self.relate(sent.group(1).decode())}'
                "</wsa:RelatesTo></s:Header><s:Body /></s:Envelope>").encode()


def test_an_answer_to_another_message_is_refused_as_pypsrp_refuses_it():
    from pypsrp.exceptions import WinRMError

    wsman = new_wsman("exch01", port=5985, path="wsman", ssl=False, auth="ntlm", username=USERNAME,
                      password=PASSWORD)
    wsman.transport = _Answering(wsman.transport.endpoint, lambda sent: sent)
    answer = wsman.invoke("urn:action", "urn:resource", None)
    assert answer.find("s:Body", namespaces=NAMESPACES) is not None
    wsman.transport = _Answering(wsman.transport.endpoint, lambda sent: "uuid:" + str(uuid.UUID(int=1)).upper())
    with pytest.raises(WinRMError, match="Received related id does not match"):
        wsman.invoke("urn:action", "urn:resource", None)
