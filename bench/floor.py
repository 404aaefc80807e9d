"""The protocol's floor: exbe's requests for a task, replayed by a minimal PSRP client (issue 26, item 2).

For measurement only; exbe never imports it. Two steps, each a process of its own:

    python -m bench.floor record INVENTORY TASK PLAN.json
        runs exbe's task in this process against a sandbox fleet and writes, per server, every pipeline exbe sent
        (endpoint, scripts or cmdlets with their parameters), in order, and the thumbprints a renewal produced;
    python -m bench.floor replay PLAN.json INVENTORY CONCURRENCY [--client floor|pypsrp]
        sends the same pipelines to a fresh fleet of the same hosts, servers concurrent with the bound:
        * ``floor``: what the protocol needs and no more: WSMan envelopes and PSRP's CLIXML written from templates
          with ids and values put in, HTTP over ``http.client`` (one keep-alive connection per endpoint), NTLM and
          message encryption with pyspnego; of each answer it reads only the ShellId, the stdout streams, each
          message's type, the pool's and pipeline's states and the output objects' text (or ``RawData``);
        * ``pypsrp``: plain pypsrp 0.9.1 (``WSMan``, ``RunspacePool``, ``PowerShell``), none of exbe's tuning.

Both open each endpoint's pool once (3 authentication requests, Create, Receive), run each pipeline as Command +
Receive(s), and close with Delete: the requests per server exbe sends (the sandbox's counters show them). A renewal's
later pipelines name the certificate the server had and the one it created; the replay reads both from the answers
(the bound thumbprint from the facts step's JSON, the new one from New-ExchangeCertificate's ``RawData``) and puts
them where the recording had its own. Exits non-zero if any pipeline failed or a thumbprint could not be read.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import json
import os
import re
import struct
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ENDPOINTS = {"winrm": "Microsoft.PowerShell", "exchange": "Microsoft.Exchange"}
BOUND = re.compile(r'"binding_information":"\*:444:","certificate_hash":"([0-9A-F]{40})"')


# -- record ----------------------------------------------------------------------------------------------------------
def record(inventory: str, task: str, out: str) -> None:
    """Run exbe's task in-process with its Session's two calls wrapped; write what each server was sent."""
    from exbe import exchange, transport
    from exbe.main import ExbeProgram

    plan: dict[str, dict[str, Any]] = {}
    run_scripts, run_cmdlets = transport.Session.run_scripts, transport.Session.run_cmdlets

    def entry(session: Any) -> dict[str, Any]:
        return plan.setdefault(session.server.name, {"calls": [], "thumbprints": {}})

    def scripts(self: Any, texts: list[str], *, repeatable: bool = False) -> Any:
        result = run_scripts(self, texts, repeatable=repeatable)
        server = entry(self)
        server["calls"].append({"endpoint": "winrm", "scripts": texts})
        for text in map(str, result.output):
            if (bound := BOUND.search(text)) and "old" not in server["thumbprints"]:
                server["thumbprints"]["old"] = bound.group(1)
        return result

    def cmdlets(self: Any, statements: list[list[tuple[str, dict[str, Any]]]]) -> Any:
        result = run_cmdlets(self, statements)
        server = entry(self)
        server["calls"].append({"endpoint": "exchange", "statements": statements})
        if statements[0][0][0] == "New-ExchangeCertificate":
            created = [c for c in map(exchange.read_certificate, result.output) if c is not None]
            server["thumbprints"]["new"] = created[0].thumbprint
        return result

    transport.Session.run_scripts, transport.Session.run_cmdlets = scripts, cmdlets  # type: ignore[method-assign]
    try:
        ExbeProgram().run(["exbe", "-f", inventory, task, "--all"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise SystemExit(f"the recording run of exbe {task} exited {exc.code}") from None
    Path(out).write_text(json.dumps(plan), encoding="utf-8")


# -- the floor client ------------------------------------------------------------------------------------------------
# Everything a request needs is a template with its ids and values put in; of each answer only what the replay must
# read is parsed (the ShellId, the stdout streams, each message's type, the states, the output strings or RawData).
ENVELOPE = (
    '<s:Envelope xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:wsmv="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"><s:Header>'
    '<wsa:Action s:mustUnderstand="true">{action}</wsa:Action>'
    '<wsmv:DataLocale s:mustUnderstand="false" xml:lang="en-US" />'
    '<wsman:Locale s:mustUnderstand="false" xml:lang="en-US" />'
    '<wsman:MaxEnvelopeSize s:mustUnderstand="true">512000</wsman:MaxEnvelopeSize>'
    '<wsa:MessageID>uuid:{message_id}</wsa:MessageID><wsman:OperationTimeout>PT60S</wsman:OperationTimeout>'
    '<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">'
    'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address></wsa:ReplyTo>'
    '<wsman:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/powershell/{configuration}'
    '</wsman:ResourceURI><wsmv:SessionId s:mustUnderstand="false">uuid:{session_id}</wsmv:SessionId>'
    '<wsa:To>{url}</wsa:To>{options}{selectors}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
)
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
STREAM = re.compile(r'<rsp:Stream Name="stdout"[^>]*>([^<]*)</rsp:Stream>')
SHELL_ID = re.compile(r"<rsp:ShellId>([^<]+)</rsp:ShellId>")
BOUNDARY = b"--Encrypted Boundary"

# PSRP (MS-PSRP 2.2): message types, and the CLIXML of the messages a client sends, written as text
SESSION_CAPABILITY, INIT_RUNSPACEPOOL, CREATE_PIPELINE = 0x10002, 0x10004, 0x21006
RUNSPACEPOOL_STATE, PIPELINE_OUTPUT, PIPELINE_STATE = 0x21005, 0x41004, 0x41006
_ENUM = '<TN RefId="{tn}"><T>{name}</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN>'
_HOST = ('<Obj RefId="{ref}" N="HostInfo"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B>'
         '<B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>')
CAPABILITY_XML = ('<Obj RefId="0"><MS><Version N="PSVersion">2.0</Version><Version N="protocolversion">2.3</Version>'
                  '<Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>')
INIT_XML = (
    '<Obj RefId="0"><MS><I32 N="MinRunspaces">1</I32><I32 N="MaxRunspaces">1</I32>'
    '<Obj RefId="1" N="PSThreadOptions"><I32>0</I32>'
    + _ENUM.format(tn=0, name="System.Management.Automation.Runspaces.PSThreadOptions")
    + '<ToString>Default</ToString></Obj><Obj RefId="2" N="ApartmentState"><I32>2</I32>'
    + _ENUM.format(tn=1, name="System.Threading.ApartmentState") + "<ToString>Unknown</ToString></Obj>"
    + _HOST.format(ref=3) + '<Obj RefId="4" N="ApplicationArguments"><TN RefId="2">'
    '<T>System.Management.Automation.PSPrimitiveDictionary</T><T>System.Collections.Hashtable</T>'
    "<T>System.Object</T></TN><DCT /></Obj></MS></Obj>")
#: CreatePipeline before its commands: RefIds 0-3 and type names 0-2 are taken here, 3 (ArrayList) by the first list
PIPELINE_HEAD = (
    '<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><MS><B N="NoInput">true</B>'
    '<Obj RefId="1" N="ApartmentState"><I32>2</I32>'
    + _ENUM.format(tn=1, name="System.Threading.ApartmentState") + "<ToString>Unknown</ToString></Obj>"
    '<Obj RefId="2" N="RemoteStreamOptions"><I32>0</I32>'
    + _ENUM.format(tn=2, name="System.Management.Automation.RemoteStreamOptions") + "<ToString>None</ToString></Obj>"
    '<B N="AddToHistory">false</B>' + _HOST.format(ref=3) + '<Obj RefId="4" N="PowerShell"><MS>')
ARRAY_LIST = '<TN RefId="3"><T>System.Collections.ArrayList</T><T>System.Object</T></TN>'
MERGE = _ENUM.format(tn=4, name="System.Management.Automation.Runspaces.PipelineResultTypes")
_ESCAPE_X = re.compile("(?i)_(x)")
_CONTROL = re.compile("[\u0000-\u001F\u007F-\u009F\uD800-\uDFFF\U00010000-\U0010FFFF]")
_ASCII_CONTROLS = tuple((chr(code), f"_x{code:04X}_") for code in (*range(0x20), 0x7F))
_UNESCAPE = re.compile("_x([0-9A-F]{4})_")
_OUTPUT_STRING = re.compile(r"^<S>(.*)</S>$", re.S)
_RAW_DATA = re.compile(r'<BA N="RawData">([^<]*)</BA>')
_STATE = re.compile(r'<I32 N="(?:PipelineState|RunspaceState)">(\d+)</I32>')


def _clixml_string(value: str) -> str:
    """A string as CLIXML's ``<S>`` text: XML's three escapes, then ``_xHHHH_`` for control characters (and ``_x``
    itself) as PowerShell's serializer writes them. ASCII text (every rendered script) takes one ``str.replace`` per
    control character it holds instead of a callback per line break, as exbe's serializer does."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "_" in value:
        value = _ESCAPE_X.sub("_x005F_\\1", value)
    if value.isascii():
        for character, escaped in _ASCII_CONTROLS:
            if character in value:
                value = value.replace(character, escaped)
        return value
    return _CONTROL.sub(lambda m: "".join(f"_x{ord(c):04X}_" if ord(c) < 0x10000 else
                                          "".join(f"_x{u:04X}_" for u in struct.unpack(">2H", c.encode("utf-16-be")))
                                          for c in m.group(0)), value)


def _from_clixml_string(text: str) -> str:
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


class _PipelineWriter:
    """The CLIXML of one CreatePipeline message, written in one pass; RefIds as PowerShell's serializer numbers them."""

    def __init__(self) -> None:
        self.ref = 4
        self.parts: list[str] = [PIPELINE_HEAD]
        self.array_list = self.merge = -1

    def _next(self) -> int:
        self.ref += 1
        return self.ref

    def _list_type(self) -> str:
        if self.array_list < 0:
            self.array_list = 3
            return ARRAY_LIST
        return '<TNRef RefId="3" />'

    def _value(self, value: Any) -> str:
        if isinstance(value, bool):
            return f'<B N="V">{"true" if value else "false"}</B>'
        if isinstance(value, int):
            return f'<I32 N="V">{value}</I32>'
        if isinstance(value, str):
            return f'<S N="V">{_clixml_string(value)}</S>'
        if value is None:
            return '<Nil N="V" />'
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            ref = self._next()
            items = "".join(f"<S>{_clixml_string(item)}</S>" for item in value)
            return f'<Obj RefId="{ref}" N="V">{self._list_type()}<LST>{items}</LST></Obj>'
        raise TypeError(f"the floor writes no CLIXML for {type(value).__name__}")

    def _command(self, name: str, params: dict[str, Any], script: bool) -> None:
        self.parts.append(f'<Obj RefId="{self._next()}"><MS><S N="Cmd">{_clixml_string(name)}</S>'
                          f'<Obj RefId="{self._next()}" N="Args">{self._list_type()}')
        if params:
            self.parts.append("<LST>")
            for key, value in params.items():
                self.parts.append(f'<Obj RefId="{self._next()}"><MS><S N="N">{_clixml_string(key)}</S>'
                                  f"{self._value(value)}</MS></Obj>")
            self.parts.append("</LST></Obj>")
        else:
            self.parts.append("<LST /></Obj>")
        self.parts.append(f'<B N="IsScript">{"true" if script else "false"}</B><Nil N="UseLocalScope" />')
        if self.merge < 0:
            self.merge = self._next()
            self.parts.append(f'<Obj RefId="{self.merge}" N="MergeMyResult"><I32>0</I32>{MERGE}'
                              "<ToString>None</ToString></Obj>")
        else:
            self.parts.append(f'<Ref RefId="{self.merge}" N="MergeMyResult" />')
        escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        self.parts.append(f'<Ref RefId="{self.merge}" N="MergeToResult" /><Ref RefId="{self.merge}" '
                          f'N="MergePreviousResults" /></MS><ToString>{escaped}</ToString></Obj>')

    def _commands(self, commands: list[tuple[str, dict[str, Any], bool]]) -> None:
        self.parts.append(f'<Obj RefId="{self._next()}" N="Cmds">{self._list_type()}<LST>')
        for command in commands:
            self._command(*command)
        self.parts.append("</LST></Obj>")

    def write(self, statements: list[list[tuple[str, dict[str, Any], bool]]]) -> str:
        self._commands(statements[0])
        self.parts.append('<B N="IsNested">false</B><Nil N="History" /><B N="RedirectShellErrorOutputPipe">true</B>')
        if len(statements) > 1:
            self.parts.append(f'<Obj RefId="{self._next()}" N="ExtraCmds">{self._list_type()}<LST>')
            for commands in statements:
                self.parts.append(f'<Obj RefId="{self._next()}"><MS>')
                self._commands(commands)
                self.parts.append("</MS></Obj>")
            self.parts.append("</LST></Obj>")
        self.parts.append('</MS></Obj><B N="IsNested">false</B></MS></Obj>')
        return "".join(self.parts)


@functools.cache
def _ntlm_hashes(username: str, password: str) -> Any:
    """The account's NTLM one-way hashes, computed once per process: pyspnego would compute them for every context
    (the protocol does not need that, and exbe does not do it either where pyspnego's NTLM is all there is)."""
    import spnego
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

    return spnego.NTLMHash(username, lm_hash=lmowfv1(password).hex(), nt_hash=ntowfv1(password).hex())


class FloorEndpoint:
    """One endpoint of one server: a keep-alive HTTP connection, NTLM with message encryption, PSRP from templates."""

    def __init__(self, host: str, port: int, path: str, configuration: str, username: str, password: str) -> None:
        self.http = http.client.HTTPConnection(host, port, timeout=120)
        self.host, self.path, self.configuration = host, "/" + path, configuration
        self.url = f"http://{host}:{port}/{path}"
        self.credentials = (username, password)
        self.session_id = str(uuid.uuid4()).upper()
        self.context: Any = None
        self.pool_id: uuid.UUID | None = None
        self.shell_id = ""
        self.object_id = 0
        self.partial: dict[int, bytes] = {}

    # HTTP and NTLM
    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        self.http.request("POST", self.path, body=body, headers={
            "User-Agent": "exbe-floor", "Accept-Encoding": "identity", "Connection": "Keep-Alive",
            "Content-Length": str(len(body)), **headers})
        response = self.http.getresponse()
        return response.status, response.headers, response.read()

    def _authenticate(self) -> None:
        import spnego

        status, headers, _ = self._post(b"", {})
        assert status == 401 and "Negotiate" in headers.get("WWW-Authenticate", ""), status
        context = spnego.client(_ntlm_hashes(*self.credentials), hostname=self.host, service="WSMAN",
                                protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm)
        token = context.step()
        while token is not None:
            status, headers, _ = self._post(b"", {"Authorization": "Negotiate " + base64.b64encode(token).decode()})
            answer = headers.get("WWW-Authenticate", "")
            if not answer.startswith("Negotiate "):
                break
            token = context.step(base64.b64decode(answer.split(" ", 1)[1]))
        assert status == 200 and context.complete, status
        self.context = context

    def _wsman(self, action: str, body: str, *, options: str = "", selectors: bool = True) -> str:
        if self.context is None:
            self._authenticate()
        message = ENVELOPE.format(
            action=action, message_id=str(uuid.uuid4()).upper(), configuration=self.configuration,
            session_id=self.session_id, url=self.url, options=options, body=body,
            selectors=(f'<wsman:SelectorSet><wsman:Selector Name="ShellId">{self.shell_id}</wsman:Selector>'
                       "</wsman:SelectorSet>" if selectors else "")).encode()
        header, data, padding = self.context.wrap_winrm(message)
        payload = b"".join((
            BOUNDARY, b"\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n",
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=%d\r\n" % (len(message) + padding),
            BOUNDARY, b"\r\n\tContent-Type: application/octet-stream\r\n",
            struct.pack("<i", len(header)), header, data, BOUNDARY, b"--\r\n"))
        status, _, answer = self._post(payload, {
            "Content-Type": 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
                            'boundary="Encrypted Boundary"'})
        text = self._unwrap(answer).decode()
        if status != 200:
            raise RuntimeError(f"{self.url}: HTTP {status}: {text[:300]}")
        return text

    def _unwrap(self, body: bytes) -> bytes:
        octets = body.split(b"\tContent-Type: application/octet-stream\r\n", 1)[1]
        octets = octets[:octets.rindex(BOUNDARY)]
        length = struct.unpack("<i", octets[:4])[0]
        return bytes(self.context.unwrap_winrm(octets[4:4 + length], octets[4 + length:]))

    # PSRP
    def _fragment(self, message_type: int, pipeline_id: uuid.UUID | None, xml: str) -> bytes:
        """One PSRP message in one fragment: protocol 2.2+ allows 500 KiB envelopes (pypsrp raises its limit to that
        after opening a pool too), enough for exbe's largest batch (about 230 KB)."""
        assert self.pool_id is not None
        self.object_id += 1
        message = b"".join((struct.pack("<iI", 2, message_type), self.pool_id.bytes_le,
                            pipeline_id.bytes_le if pipeline_id else bytes(16), xml.encode()))
        if len(message) > 380_000:  # its base64 and the envelope within 512000 bytes
            raise ValueError(f"a message of {len(message)} bytes needs several fragments; the floor writes one")
        return struct.pack(">QQBI", self.object_id, 0, 3, len(message)) + message

    def _messages(self, answer: str) -> Iterator[tuple[int, str]]:
        """(message type, CLIXML) of every whole message in a Receive answer; fragments of a longer one are kept."""
        for chunk in STREAM.findall(answer):
            data = base64.b64decode(chunk)
            while data:
                object_id, _, flags, length = struct.unpack(">QQBI", data[:21])
                blob, data = data[21:21 + length], data[21 + length:]
                if not flags & 1:
                    blob = self.partial.pop(object_id) + blob
                if not flags & 2:
                    self.partial[object_id] = blob
                    continue
                xml = blob[40:]
                yield struct.unpack("<I", blob[4:8])[0], (xml[3:] if xml[:3] == b"\xef\xbb\xbf" else xml).decode()

    def _receive(self, command_id: str | None, kind: int, final: tuple[int, ...]) -> tuple[list[str], int]:
        """Receive until a state message of type ``kind`` names one of the ``final`` states: the output messages'
        CLIXML, and that state."""
        output: list[str] = []
        desired = f' CommandId="{command_id}"' if command_id else ""
        while True:
            answer = self._wsman(f"{SHELL}/Receive", f'<rsp:Receive><rsp:DesiredStream{desired}>stdout'
                                 "</rsp:DesiredStream></rsp:Receive>",
                                 options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option '
                                         'Name="WSMAN_CMDSHELL_OPTION_KEEPALIVE">True</wsman:Option>'
                                         "</wsman:OptionSet>")
            for message_type, xml in self._messages(answer):
                if message_type == PIPELINE_OUTPUT:
                    output.append(xml)
                elif message_type == kind and (state := _STATE.search(xml)) and int(state.group(1)) in final:
                    return output, int(state.group(1))

    def _open(self) -> None:
        self.pool_id = uuid.uuid4()
        creation = base64.b64encode(self._fragment(SESSION_CAPABILITY, None, CAPABILITY_XML)
                                    + self._fragment(INIT_RUNSPACEPOOL, None, INIT_XML)).decode()
        answer = self._wsman(
            f"{TRANSFER}/Create", f'<rsp:Shell ShellId="{str(self.pool_id).upper()}">'
            "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
            f'<creationXml xmlns="http://schemas.microsoft.com/powershell">{creation}</creationXml></rsp:Shell>',
            options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option MustComply="true" '
                    'Name="protocolversion">2.3</wsman:Option></wsman:OptionSet>', selectors=False)
        self.shell_id = SHELL_ID.search(answer).group(1)  # type: ignore[union-attr]
        _, state = self._receive(None, RUNSPACEPOOL_STATE, (2, 3, 5))  # Opened, Closed, Broken
        if state != 2:
            raise RuntimeError(f"{self.url}: the runspace pool ended in state {state}, not Opened")

    def run(self, call: dict[str, Any]) -> tuple[list[str], bool]:
        """Run a recorded call's statements as one PSRP pipeline: its output objects (a string's text, any other
        object's CLIXML), and whether it failed."""
        if self.pool_id is None:
            self._open()
        pipeline_id = uuid.uuid4()
        command_id = str(pipeline_id).upper()
        arguments = base64.b64encode(self._fragment(CREATE_PIPELINE, pipeline_id,
                                                    _PipelineWriter().write(_floor_statements(call)))).decode()
        self._wsman(f"{SHELL}/Command", f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command />'
                    f"<rsp:Arguments>{arguments}</rsp:Arguments></rsp:CommandLine>",
                    options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option Name="WINRS_SKIP_CMD_SHELL">'
                            "False</wsman:Option></wsman:OptionSet>")
        output, state = self._receive(command_id, PIPELINE_STATE, (3, 4, 5))  # Stopped, Completed, Failed
        return [_floor_output(xml) for xml in output], state != 4  # 4: Completed

    def close(self) -> None:
        if self.pool_id is not None:
            self._wsman(f"{TRANSFER}/Delete", "")
        self.http.close()


def _floor_output(xml: str) -> str:
    """An output object the floor received, as the replay reads it: a string's text, else its CLIXML."""
    string = _OUTPUT_STRING.match(xml)
    return _from_clixml_string(string.group(1)) if string else xml


def _floor_statements(call: dict[str, Any]) -> list[list[tuple[str, dict[str, Any], bool]]]:
    if call["endpoint"] == "winrm":
        return [[(script, {}, True)] for script in call["scripts"]]
    return [[(name, params, False) for name, params in commands] for commands in call["statements"]]


def _pypsrp_build(call: dict[str, Any]) -> Any:
    """A pipeline builder for pypsrp's PowerShell: the call's scripts, or its statements of cmdlets."""
    def build(ps: Any) -> None:
        for i, commands in enumerate(_floor_statements(call)):
            if i:
                ps.add_statement()
            for name, params, script in commands:
                if script:
                    ps.add_script(name)
                else:
                    ps.add_cmdlet(name)
                for key, value in params.items():
                    ps.add_parameter(key, value)
    return build


# -- plain pypsrp ----------------------------------------------------------------------------------------------------
class PypsrpEndpoint:
    """The same endpoint through plain pypsrp: WSMan + RunspacePool + PowerShell, defaults everywhere."""

    def __init__(self, wsman: Any, configuration: str) -> None:
        self.wsman, self.configuration = wsman, configuration
        self.pool: Any = None

    def run(self, call: dict[str, Any]) -> tuple[list[Any], bool]:
        from pypsrp.powershell import PowerShell, RunspacePool

        if self.pool is None:
            self.pool = RunspacePool(self.wsman, configuration_name=self.configuration)
            self.pool.open()
        ps = PowerShell(self.pool)
        _pypsrp_build(call)(ps)
        ps.invoke()
        return list(ps.output), bool(ps.had_errors)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.wsman.close()


# -- replay ----------------------------------------------------------------------------------------------------------
def _new_thumbprint(objects: list[Any]) -> str | None:
    """The thumbprint of New-ExchangeCertificate's output: the SHA-1 of its ``RawData`` (the floor hands over the
    object's CLIXML; pypsrp's ``GenericComplexObject`` keeps properties in two dictionaries)."""
    for obj in objects:
        if isinstance(obj, str):
            raw: Any = _RAW_DATA.search(obj)
            raw = base64.b64decode(raw.group(1)) if raw else None
        else:
            raw = {**(getattr(obj, "adapted_properties", None) or {}),
                   **(getattr(obj, "extended_properties", None) or {})}.get("RawData")
        if isinstance(raw, (bytes, bytearray)):
            return hashlib.sha1(bytes(raw)).hexdigest().upper()
    return None


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` with the recording's thumbprints replaced by this server's, in every string it holds."""
    if isinstance(value, str):
        for recorded, actual in mapping.items():
            value = value.replace(recorded, actual)
        return value
    if isinstance(value, dict):
        return {key: _substitute(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, mapping) for item in value]
    return value


def replay_server(name: str, entry: dict[str, Any], server: dict[str, Any], client: str, credentials: Any,
                  wsmans: dict[str, Any]) -> str | None:
    """Replay one server's pipelines; None when all completed, else what went wrong."""
    if client == "floor":
        endpoints: dict[str, Any] = {
            "winrm": FloorEndpoint(entry["host"], entry["port"], "wsman", ENDPOINTS["winrm"], *credentials),
            "exchange": FloorEndpoint(entry["host"], entry["exchange_port"], entry.get("exchange_path", "PowerShell"),
                                      ENDPOINTS["exchange"], *credentials)}
    else:
        endpoints = {ep: PypsrpEndpoint(wsmans[ep], ENDPOINTS[ep]) for ep in ENDPOINTS}
    recorded = server["thumbprints"]
    learned: dict[str, str] = {}
    failure: BaseException | None = None
    try:
        for call in server["calls"]:
            if learned:
                call = _substitute(call, {recorded[which]: thumbprint for which, thumbprint in learned.items()})
            output, failed = endpoints[call["endpoint"]].run(call)
            if call["endpoint"] == "winrm":
                for item in map(str, output):
                    if '"ok":false' in item:
                        return f"a step answered not ok: {item[:300]}"
                    if (bound := BOUND.search(item)) and "old" not in learned and "old" in recorded:
                        learned["old"] = bound.group(1)
            else:
                if call["statements"][0][0][0] == "New-ExchangeCertificate":
                    thumbprint = _new_thumbprint(output)
                    if thumbprint is None:
                        return "no thumbprint in New-ExchangeCertificate's output"
                    learned["new"] = thumbprint
            if failed:
                return f"a pipeline on {call['endpoint']} failed"
        if set(recorded) - set(learned):
            return f"thumbprints not read: {sorted(set(recorded) - set(learned))}"
        return None
    except BaseException as exc:
        failure = exc
        raise
    finally:
        for endpoint in endpoints.values():
            try:
                endpoint.close()
            except Exception:
                if failure is None:
                    raise  # closing failed on its own; otherwise the first error is the one to see


def replay(plan_file: str, inventory: str, concurrency: int, client: str) -> int:
    plan = json.loads(Path(plan_file).read_text(encoding="utf-8"))
    with open(inventory, encoding="utf-8") as handle:
        entries = {e["name"]: e for e in json.load(handle)["exbe"]["inventory"]}
    credentials = (os.environ["EXBE_USERNAME"], os.environ["EXBE_PASSWORD"])
    wsmans: dict[str, dict[str, Any]] = {}
    if client == "pypsrp":
        from pypsrp.wsman import WSMan

        for name, entry in entries.items():  # built before any thread starts: pypsrp's namespace race (issue 26)
            wsmans[name] = {
                "winrm": WSMan(entry["host"], port=entry["port"], ssl=False, auth=entry["auth"],
                               username=credentials[0], password=credentials[1], operation_timeout=60),
                "exchange": WSMan(entry["host"], port=entry["exchange_port"], path="PowerShell", ssl=False,
                                  auth=entry["auth"], username=credentials[0], password=credentials[1],
                                  operation_timeout=60)}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda name: replay_server(name, entries[name], plan[name], client, credentials,
                                                           wsmans.get(name, {})), sorted(plan)))
    failed = [(name, why) for name, why in zip(sorted(plan), results, strict=True) if why]
    print(f"replayed {len(plan)} servers with {client}: {len(plan) - len(failed)} completed")
    for name, why in failed[:5]:
        print(f"  {name}: {why}", file=sys.stderr)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("inventory")
    rec.add_argument("task")
    rec.add_argument("plan")
    rep = commands.add_parser("replay")
    rep.add_argument("plan")
    rep.add_argument("inventory")
    rep.add_argument("concurrency", type=int)
    rep.add_argument("--client", choices=("floor", "pypsrp"), default="floor")
    args = parser.parse_args()
    if args.command == "record":
        record(args.inventory, args.task, args.plan)
    else:
        sys.exit(replay(args.plan, args.inventory, args.concurrency, args.client))


if __name__ == "__main__":
    main()
