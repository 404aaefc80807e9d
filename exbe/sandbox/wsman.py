"""WS-Management SOAP envelopes: parse requests, build responses and the faults real WinRM returns."""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {
    TRANSFER + "Create": "Create",
    TRANSFER + "Delete": "Delete",
    SHELL + "Command": "Command",
    SHELL + "Send": "Send",
    SHELL + "Receive": "Receive",
    SHELL + "Signal": "Signal",
}
RESPONSE_ACTIONS = {
    "Create": TRANSFER + "CreateResponse",
    "Delete": TRANSFER + "DeleteResponse",
    "Command": SHELL + "CommandResponse",
    "Send": SHELL + "SendResponse",
    "Receive": SHELL + "ReceiveResponse",
    "Signal": SHELL + "SignalResponse",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
COMMAND_DONE = SHELL + "CommandState/Done"
COMMAND_RUNNING = SHELL + "CommandState/Running"


@dataclasses.dataclass
class Fault(Exception):
    """A WSMan fault: HTTP status, SOAP code/subcode, WSManFault code and message."""

    http_status: int
    code: int
    message: str
    subcode: str = "w:InternalError"
    soap_code: str = "s:Receiver"

    def __str__(self) -> str:
        return f"WSMan fault {self.code}: {self.message}"


def operation_timeout() -> Fault:
    return Fault(500, 2150858793, "The WS-Management service cannot complete the operation within the time specified "
                 "in OperationTimeout.", subcode="w:TimedOut")


def invalid_selectors(what: str) -> Fault:
    return Fault(400, 2150858843, f"The request for the Windows Remote Shell with ShellId {what} failed because the "
                 "shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the "
                 "shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry "
                 "the operation.", subcode="w:InvalidSelectors", soap_code="s:Sender")


@dataclasses.dataclass
class Request:
    """The parts of a WSMan request the sandbox acts on."""

    action: str
    message_id: str
    resource_uri: str
    shell_id: str | None
    operation_timeout: float
    body: ET.Element

    @property
    def configuration_name(self) -> str:
        """``Microsoft.PowerShell`` / ``Microsoft.Exchange`` from the resource URI."""
        return self.resource_uri[len(PS_RESOURCE_PREFIX):] if self.resource_uri.startswith(PS_RESOURCE_PREFIX) else ""


def parse_request(data: bytes) -> Request:
    """Parse a SOAP envelope; raises :class:`Fault` for malformed XML or an unsupported action."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise Fault(400, 2150858817, f"The WS-Management service cannot process the request because the XML is "
                    f"invalid: {exc}.", subcode="w:SchemaValidationError", soap_code="s:Sender") from None
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None or body is None:
        raise Fault(400, 2150858817, "The WS-Management service cannot process the request because the SOAP envelope "
                    "is incomplete.", subcode="w:SchemaValidationError", soap_code="s:Sender")
    action_uri = _text(header, "wsa:Action")
    action = ACTIONS.get(action_uri)
    if action is None:
        raise Fault(400, 2150858771, f"The WS-Management service does not support the action {action_uri!r}.",
                    subcode="wsa:ActionNotSupported", soap_code="s:Sender")
    shell_id = None
    for selector in header.findall("wsman:SelectorSet/wsman:Selector", NS):
        if selector.attrib.get("Name") == "ShellId":
            shell_id = (selector.text or "").upper()
    return Request(
        action=action,
        message_id=_text(header, "wsa:MessageID"),
        resource_uri=_text(header, "wsman:ResourceURI"),
        shell_id=shell_id,
        operation_timeout=_duration(_text(header, "wsman:OperationTimeout")),
        body=body,
    )


def _text(parent: ET.Element, path: str) -> str:
    node = parent.find(path, NS)
    return (node.text or "").strip() if node is not None else ""


def _duration(value: str) -> float:
    """xs:duration as WSMan sends it (``PT20S``, ``PT1.5S``)."""
    if value.startswith("PT") and value.endswith("S"):
        try:
            return float(value[2:-1])
        except ValueError:
            pass
    return 60.0


def envelope(action: str, relates_to: str, body_children: list[ET.Element] | None = None) -> bytes:
    """A response envelope for ``action`` (a key of RESPONSE_ACTIONS or a full URI)."""
    env = ET.Element(f"{{{NS['s']}}}Envelope")
    header = ET.SubElement(env, f"{{{NS['s']}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = RESPONSE_ACTIONS.get(action, action)
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{uuid.uuid4()}".upper()
    ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    ET.SubElement(header, f"{{{NS['wsa']}}}To").text = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
    body = ET.SubElement(env, f"{{{NS['s']}}}Body")
    for child in body_children or []:
        body.append(child)
    return _serialize(env, xml_declaration=False)


def fault_envelope(fault: Fault, relates_to: str, machine: str) -> bytes:
    """The SOAP fault body WinRM sends, with a WSManFault detail pypsrp parses into WSManFaultError."""
    env = ET.Element(f"{{{NS['s']}}}Envelope")
    header = ET.SubElement(env, f"{{{NS['s']}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = FAULT_ACTION
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{uuid.uuid4()}".upper()
    if relates_to:
        ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    body = ET.SubElement(env, f"{{{NS['s']}}}Body")
    soap_fault = ET.SubElement(body, f"{{{NS['s']}}}Fault")
    code = ET.SubElement(soap_fault, f"{{{NS['s']}}}Code")
    ET.SubElement(code, f"{{{NS['s']}}}Value").text = fault.soap_code
    sub = ET.SubElement(code, f"{{{NS['s']}}}Subcode")
    ET.SubElement(sub, f"{{{NS['s']}}}Value").text = fault.subcode
    reason = ET.SubElement(soap_fault, f"{{{NS['s']}}}Reason")
    ET.SubElement(reason, f"{{{NS['s']}}}Text", {f"{{{NS['xml']}}}lang": "en-US"}).text = fault.message
    detail = ET.SubElement(soap_fault, f"{{{NS['s']}}}Detail")
    wsman_fault = ET.SubElement(detail, f"{{{NS['wsmanfault']}}}WSManFault",
                                {"Code": str(fault.code), "Machine": machine})
    ET.SubElement(wsman_fault, f"{{{NS['wsmanfault']}}}Message").text = fault.message
    return _serialize(env)


def _serialize(env: ET.Element, *, xml_declaration: bool | None = None) -> bytes:
    """``env`` as UTF-8 bytes (typeshed types ``tostring`` with an encoding other than "unicode" as Any)."""
    data: bytes = ET.tostring(env, encoding="utf-8", xml_declaration=xml_declaration)
    return data


def rsp(tag: str, attrib: dict[str, str] | None = None, text: str | None = None) -> ET.Element:
    node = ET.Element(f"{{{NS['rsp']}}}{tag}", attrib or {})
    if text is not None:
        node.text = text
    return node
