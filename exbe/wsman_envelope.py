"""WSMan envelopes written as text: what pypsrp's ``WSMan.invoke`` sends, byte for byte, without ElementTree (issue 26).

pypsrp 0.9.1 builds every request's envelope as an ElementTree (a dozen header elements, the option and selector
sets, the body pypsrp's shell code made) and writes it with ``ET.tostring``, whose Python-level namespace pass and
writer cost more than half a millisecond per request. :func:`text_wsman` is a ``WSMan`` whose ``invoke`` writes
the same bytes directly: the header from its fields, the option/selector sets and the body with a small writer for the
only shapes pypsrp makes (namespaced tags and attributes, text, no comments), namespace declarations on the root as
ElementTree puts them (the prefixes used, sorted). Anything else -- a prefix not registered as pypsrp's, a value that
is not text -- goes through pypsrp's own ``invoke``. What it does with the answer is pypsrp's: a WSMan fault in an
HTTP error is raised as pypsrp's ``WSManFaultError``, an answer to another message is refused.
``tests/test_wsman_envelope.py`` compares both writers over every request exbe's flows send.
"""

from __future__ import annotations

import functools
import types
import uuid
import xml.etree.ElementTree as ET
from typing import Any

#: ``{uri}local`` -> (uri, local) for names already written (a handful: the WSMan and shell vocabularies).
_NAMES: dict[str, tuple[str, str]] = {}
_REPLY_TO = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_SHELL_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
_EMPTY_UUID = "00000000-0000-0000-0000-000000000000"
#: what :func:`envelope` writes around the body, and pypsrp's mock envelope does not have
_BODY = b"<s:Body></s:Body>"


class _Unwritable(Exception):
    """A shape this writer does not write exactly as ElementTree does: pypsrp's own invoke sends it."""


@functools.cache
def text_wsman() -> type:
    """pypsrp's ``WSMan`` with its envelopes written as text: ``invoke`` writes each request with :func:`envelope`
    (pypsrp's own ``invoke`` for what that cannot write), and the largest payload an envelope can carry is worked out
    from pypsrp's mock envelope written the same way (pypsrp writes it with ElementTree for every ``WSMan`` it builds
    and every time the server's limit is learnt)."""
    from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan, WSManAction

    header_names = {prefix: NAMESPACES[prefix] for prefix in ("s", "wsa", "wsman", "wsmv")}
    rsp = NAMESPACES["rsp"]

    class TextWSMan(WSMan):
        def invoke(self, action: str, resource_uri: str, resource: ET.Element | None, option_set: Any = None,
                   selector_set: Any = None, timeout: int | None = None, *, retries_on_read_timeout: int = 0) -> Any:
            message_id = str(uuid.uuid4()).upper()
            try:
                xml = envelope(self, header_names, action, resource_uri, resource, option_set, selector_set, timeout,
                               message_id)
            except _Unwritable:
                return super().invoke(action, resource_uri, resource, option_set, selector_set, timeout,
                                      retries_on_read_timeout=retries_on_read_timeout)
            return _exchange(self, xml, f"uuid:{message_id}", timeout, retries_on_read_timeout)

        def _calc_envelope_size(self, max_envelope_size: int) -> int:
            """pypsrp's arithmetic on the length of pypsrp's mock envelope: a Send header (a ShellId selector, no
            options) with an empty stdin Stream, placed in the Envelope without a Body element. The endpoint is the
            only value in it that differs between servers; the rest is written once per set of values."""
            try:
                written = (_mock_length(self.data_locale, self.locale, self.max_envelope_size, self.operation_timeout,
                                        len(str(self.session_id)), _prefixes(mock_names))
                           + len(_text(self.transport.endpoint).encode("utf-8", "xmlcharrefreplace")))
            except _Unwritable:
                return int(super()._calc_envelope_size(max_envelope_size))
            envelope_size = written - len(_BODY) + 256
            return int((max_envelope_size - envelope_size) / 4 * 3)

    @functools.lru_cache(maxsize=64)
    def _mock_length(data_locale: str, locale: str, max_envelope_size: int, operation_timeout: int,
                     session_id_length: int, prefixes: tuple[str | None, ...]) -> int:
        """The length of pypsrp's mock envelope for these values, its endpoint (``wsa:To``) empty."""
        selector_set = SelectorSet()
        selector_set.add_option("ShellId", _EMPTY_UUID)
        send = ET.Element(f"{{{rsp}}}Send")
        ET.SubElement(send, f"{{{rsp}}}Stream", Name="stdin", CommandId=_EMPTY_UUID).text = ""
        values = types.SimpleNamespace(data_locale=data_locale, locale=locale, max_envelope_size=max_envelope_size,
                                       operation_timeout=operation_timeout, session_id="0" * session_id_length,
                                       transport=types.SimpleNamespace(endpoint=""))
        return len(envelope(values, header_names, WSManAction.SEND, _SHELL_CMD, send, None, selector_set, None,
                            _EMPTY_UUID))

    mock_names = (*header_names.values(), rsp)
    return TextWSMan


def envelope(wsman: Any, header_names: dict[str, str], action: str, resource_uri: str, resource: ET.Element | None,
             option_set: Any, selector_set: Any, timeout: int | None, message_id: str) -> bytes:
    """The bytes pypsrp's ``invoke`` writes for this request (``message_id``: its MessageID, upper-case)."""
    registered = ET._namespace_map  # type: ignore[attr-defined]  # ElementTree's prefix map, as its writer uses it
    for prefix, uri in header_names.items():
        if registered.get(uri) != prefix:
            raise _Unwritable(uri)
    used = dict.fromkeys(header_names.values())
    tail: list[str] = []
    for part in (option_set.pack() if option_set is not None else None,
                 selector_set.pack() if selector_set is not None else None):
        if part is not None:
            _element(part, tail, used)
    tail.append("</s:Header>")
    if resource is None:
        tail.append("<s:Body />")
    else:
        tail.append("<s:Body>")
        _element(resource, tail, used)
        tail.append("</s:Body>")
    declarations = "".join(f' xmlns:{prefix}="{ET._escape_attrib(uri)}"'  # type: ignore[attr-defined]
                           for prefix, uri in sorted((registered[uri], uri) for uri in used))
    text = (f"<s:Envelope{declarations}><s:Header>"
            f'<wsa:Action s:mustUnderstand="true">{_text(action)}</wsa:Action>'
            f'<wsmv:DataLocale s:mustUnderstand="false" xml:lang="{_attr(wsman.data_locale)}" />'
            f'<wsman:Locale s:mustUnderstand="false" xml:lang="{_attr(wsman.locale)}" />'
            f'<wsman:MaxEnvelopeSize s:mustUnderstand="true">{wsman.max_envelope_size}</wsman:MaxEnvelopeSize>'
            f"<wsa:MessageID>uuid:{message_id}</wsa:MessageID>"
            f"<wsman:OperationTimeout>PT{timeout or wsman.operation_timeout}S</wsman:OperationTimeout>"
            f'<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{_REPLY_TO}</wsa:Address></wsa:ReplyTo>'
            f'<wsman:ResourceURI s:mustUnderstand="true">{_text(resource_uri)}</wsman:ResourceURI>'
            f'<wsmv:SessionId s:mustUnderstand="false">uuid:{str(wsman.session_id).upper()}</wsmv:SessionId>'
            f"<wsa:To>{_text(wsman.transport.endpoint)}</wsa:To>"
            + "".join(tail) + "</s:Envelope>")
    return text.encode("utf-8", "xmlcharrefreplace")  # what ElementTree's UTF-8 writer does with a lone surrogate


def _exchange(wsman: Any, xml: bytes, message_id: str, timeout: int | None, retries_on_read_timeout: int) -> Any:
    """Send, and read the answer as pypsrp's ``invoke`` does."""
    from pypsrp.exceptions import WinRMError, WinRMTransportError
    from pypsrp.wsman import NAMESPACES

    try:
        # pypsrp's failsafe: the HTTP wait outlasts the WSMan operation timeout it asked for
        response = wsman.transport.send(xml, retries_on_read_timeout=retries_on_read_timeout,
                                        timeout=timeout + 2 if timeout else None)
    except WinRMTransportError as err:
        try:
            raise wsman._parse_wsman_fault(err.response_text)  # noqa: B904 - chained to the HTTP error, as pypsrp
        except ET.ParseError:
            raise err  # noqa: B904 - no WSMan fault in it: the HTTP error itself
    answer = ET.fromstring(response)
    # pypsrp's find("s:Header/wsa:RelatesTo"): the first RelatesTo child of a Header child, without ElementPath
    header, relates = f"{{{NAMESPACES['s']}}}Header", f"{{{NAMESPACES['wsa']}}}RelatesTo"
    relates_to = next((child for part in answer if part.tag == header for child in part if child.tag == relates), None)
    if (relates_to.text if relates_to is not None else "") != message_id:
        raise WinRMError(f"Received related id does not match related expected message id: Sent: {message_id}, "
                         f"Received: {relates_to.text if relates_to is not None else ''}")
    return answer


def _element(elem: ET.Element, out: list[str], used: dict[str, None]) -> None:
    """ElementTree's writer for one element (short empty elements, attributes in their order), names prefixed."""
    tag = _name(elem.tag, used)
    out.append("<" + tag)
    for key, value in elem.attrib.items():
        out.append(f' {_name(key, used)}="{_attr(value)}"')
    text = elem.text
    if text or len(elem):
        out.append(">")
        if text:
            out.append(_text(text))
        for child in elem:
            _element(child, out, used)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    if elem.tail:
        out.append(_text(elem.tail))


def _prefixes(uris: tuple[str, ...]) -> tuple[str | None, ...]:
    """The prefixes ElementTree now writes for ``uris`` (what an envelope written earlier depended on)."""
    return tuple(ET._namespace_map.get(uri) for uri in uris)  # type: ignore[attr-defined]


def _name(qname: Any, used: dict[str, None]) -> str:
    split = _NAMES.get(qname) if isinstance(qname, str) else None
    if split is None:
        if not isinstance(qname, str):
            raise _Unwritable(repr(qname))  # a QName object: ElementTree's business
        if not qname.startswith("{"):
            return qname  # an unqualified name (an option's Name) is written as it is
        uri, local = qname[1:].split("}", 1)
        split = _NAMES.setdefault(qname, (uri, local))
    prefix = ET._namespace_map.get(split[0])  # type: ignore[attr-defined]
    if prefix is None:
        raise _Unwritable(split[0])  # ElementTree would invent ns0
    if prefix != "xml":  # ElementTree never declares xml:
        used[split[0]] = None
    return f"{prefix}:{split[1]}"


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unwritable(repr(type(value)))
    return ET._escape_cdata(value)  # type: ignore[attr-defined,no-any-return]


def _attr(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unwritable(repr(type(value)))
    return ET._escape_attrib(value)  # type: ignore[attr-defined,no-any-return]
