"""The protocol's floor: exbe's requests for a task, replayed by a minimal PSRP client (issue 26, item 2).

For measurement only; exbe never imports it. Two steps, each a process of its own:

    python -m bench.floor record INVENTORY TASK PLAN.json
        runs exbe's task in this process against a sandbox fleet and writes, per server, every pipeline exbe sent
        (endpoint, scripts or cmdlets with their parameters), in order, and the thumbprints a renewal produced;
    python -m bench.floor replay PLAN.json INVENTORY CONCURRENCY [--client floor|pypsrp]
        sends the same pipelines to a fresh fleet of the same hosts, servers concurrent with the bound:
        * ``floor``: WSMan envelopes from string templates, HTTP over ``http.client`` (one keep-alive connection per
          endpoint), NTLM and message encryption with pyspnego, PSRP messages with psrpcore's sans-IO client;
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
import hashlib
import http.client
import json
import os
import re
import struct
import sys
import uuid
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


class FloorEndpoint:
    """One endpoint of one server: a keep-alive HTTP connection, NTLM with message encryption, a psrpcore pool."""

    def __init__(self, host: str, port: int, path: str, configuration: str, username: str, password: str) -> None:
        self.http = http.client.HTTPConnection(host, port, timeout=120)
        self.host, self.path, self.configuration = host, "/" + path, configuration
        self.url = f"http://{host}:{port}/{path}"
        self.credentials = (username, password)
        self.session_id = str(uuid.uuid4()).upper()
        self.context: Any = None
        self.pool: Any = None
        self.shell_id = ""

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
        context = spnego.client(*self.credentials, hostname=self.host, service="WSMAN", protocol="ntlm",
                                options=spnego.NegotiateOptions.wrapping_winrm)
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
    def _receive(self, command_id: str | None, target: Any) -> list[Any]:
        """Receive until ``target`` (the pool, or a pipeline) reaches a final state; its events."""
        import psrpcore

        events: list[Any] = []
        desired = f' CommandId="{command_id}"' if command_id else ""
        while True:
            answer = self._wsman(f"{SHELL}/Receive", f'<rsp:Receive><rsp:DesiredStream{desired}>stdout'
                                 "</rsp:DesiredStream></rsp:Receive>",
                                 options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option '
                                         'Name="WSMAN_CMDSHELL_OPTION_KEEPALIVE">True</wsman:Option>'
                                         "</wsman:OptionSet>")
            for chunk in STREAM.findall(answer):
                self.pool.receive_data(psrpcore.PSRPPayload(base64.b64decode(chunk), psrpcore.StreamType.default,
                                                            None))
            while (event := self.pool.next_event()) is not None:
                events.append(event)
            if target is self.pool:
                if self.pool.state.name == "Opened":
                    return events
            elif target.state.name in ("Completed", "Failed", "Stopped"):
                return events

    def _open(self) -> None:
        import psrpcore

        self.pool = psrpcore.ClientRunspacePool()
        self.pool.open()
        creation = base64.b64encode(self.pool.data_to_send().data).decode()
        answer = self._wsman(
            f"{TRANSFER}/Create", f'<rsp:Shell ShellId="{str(self.pool.runspace_pool_id).upper()}">'
            "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
            f'<creationXml xmlns="http://schemas.microsoft.com/powershell">{creation}</creationXml></rsp:Shell>',
            options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option MustComply="true" '
                    'Name="protocolversion">2.3</wsman:Option></wsman:OptionSet>', selectors=False)
        self.shell_id = SHELL_ID.search(answer).group(1)  # type: ignore[union-attr]
        self._receive(None, self.pool)

    def run(self, build: Any) -> tuple[list[Any], bool]:
        """Run one pipeline built by ``build(ClientPowerShell)``: its output objects, and whether it failed."""
        import psrpcore

        if self.pool is None:
            self._open()
        ps = psrpcore.ClientPowerShell(self.pool)
        build(ps)
        ps.start()
        command_id = str(ps.pipeline_id).upper()
        arguments = base64.b64encode(self.pool.data_to_send().data).decode()
        self._wsman(f"{SHELL}/Command", f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command />'
                    f"<rsp:Arguments>{arguments}</rsp:Arguments></rsp:CommandLine>",
                    options='<wsman:OptionSet s:mustUnderstand="true"><wsman:Option Name="WINRS_SKIP_CMD_SHELL">'
                            "False</wsman:Option></wsman:OptionSet>")
        events = self._receive(command_id, ps)
        ps.close()
        output = [e.data for e in events if isinstance(e, psrpcore.PipelineOutputEvent)]
        return output, ps.state.name != "Completed"

    def close(self) -> None:
        if self.pool is not None:
            self._wsman(f"{TRANSFER}/Delete", "")
        self.http.close()


def _floor_scripts(ps: Any, scripts: list[str]) -> None:
    for i, script in enumerate(scripts):
        if i:
            ps.add_statement()
        ps.add_script(script)


def _cmdlets_through(add: str) -> Any:
    """Statements of cmdlets into a pipeline, each command added by the client's own method (psrpcore's
    ``add_command``, pypsrp's ``add_cmdlet``)."""
    def into(ps: Any, statements: list[list[Any]]) -> None:
        for i, commands in enumerate(statements):
            if i:
                ps.add_statement()
            for name, params in commands:
                getattr(ps, add)(name)
                for key, value in params.items():
                    ps.add_parameter(key, value)
    return into


_floor_cmdlets = _cmdlets_through("add_command")
_pypsrp_cmdlets = _cmdlets_through("add_cmdlet")


# -- plain pypsrp ----------------------------------------------------------------------------------------------------
class PypsrpEndpoint:
    """The same endpoint through plain pypsrp: WSMan + RunspacePool + PowerShell, defaults everywhere."""

    def __init__(self, wsman: Any, configuration: str) -> None:
        self.wsman, self.configuration, self.pool = wsman, configuration, None

    def run(self, build: Any) -> tuple[list[Any], bool]:
        from pypsrp.powershell import PowerShell, RunspacePool

        if self.pool is None:
            self.pool = RunspacePool(self.wsman, configuration_name=self.configuration)
            self.pool.open()
        ps = PowerShell(self.pool)
        build(ps)
        ps.invoke()
        return list(ps.output), bool(ps.had_errors)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.wsman.close()


# -- replay ----------------------------------------------------------------------------------------------------------
def _new_thumbprint(objects: list[Any]) -> str | None:
    """The thumbprint of New-ExchangeCertificate's output: the SHA-1 of its ``RawData`` (a psrpcore ``PSObject``
    indexes its properties; pypsrp's ``GenericComplexObject`` keeps them in two dictionaries)."""
    for obj in objects:
        try:
            raw = obj["RawData"]
        except (KeyError, TypeError):
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
        scripts_into, cmdlets_into = _floor_scripts, _floor_cmdlets
    else:
        endpoints = {ep: PypsrpEndpoint(wsmans[ep], ENDPOINTS[ep]) for ep in ENDPOINTS}
        scripts_into, cmdlets_into = _floor_scripts, _pypsrp_cmdlets
    recorded = server["thumbprints"]
    learned: dict[str, str] = {}
    failure: BaseException | None = None
    try:
        for call in server["calls"]:
            if learned:
                call = _substitute(call, {recorded[which]: thumbprint for which, thumbprint in learned.items()})
            if call["endpoint"] == "winrm":
                output, failed = endpoints["winrm"].run(lambda ps, c=call: scripts_into(ps, c["scripts"]))
                for item in map(str, output):
                    if '"ok":false' in item:
                        return f"a step answered not ok: {item[:300]}"
                    if (bound := BOUND.search(item)) and "old" not in learned and "old" in recorded:
                        learned["old"] = bound.group(1)
            else:
                output, failed = endpoints["exchange"].run(lambda ps, c=call: cmdlets_into(ps, c["statements"]))
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
