"""The HTTP side of a sandbox host: WinRM's ``/wsman`` and Exchange's ``/PowerShell`` on one listener.

Threads are bounded: each listener serves connections from a fixed-size pool; an idle keep-alive connection is
closed after ``IDLE_TIMEOUT`` seconds, as http.sys does.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import socket
import socketserver
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import wsman
from .auth import AuthFailed, ConnectionAuth
from .psrp import DropConnection, Shell

if TYPE_CHECKING:
    from .host import SandboxHost

log = logging.getLogger("exbe.sandbox")

#: what socketserver hands a server per connection: a socket (TCP) or a (data, socket) pair (UDP)
_Request = socket.socket | tuple[bytes, socket.socket]

#: Endpoint path -> (counter name, PSRP configuration it serves)
ENDPOINTS = {"/wsman": ("winrm", "Microsoft.PowerShell"), "/powershell": ("exchange", "Microsoft.Exchange")}
MAX_ENVELOPE_BYTES = 1024 * 1024  # encrypted 500 KiB envelopes plus MIME overhead
IDLE_TIMEOUT = 120.0
WORKERS_PER_LISTENER = 32


class _BoundedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], host: SandboxHost, tls: ssl.SSLContext | None) -> None:
        self.sandbox_host = host
        self.tls = tls
        self._pool = ThreadPoolExecutor(max_workers=WORKERS_PER_LISTENER, thread_name_prefix=f"sbx-{host.name}")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        # a TCP server's request is its connected socket (the (data, socket) pair is UDPServer's)
        assert isinstance(request, socket.socket)
        with self._open_lock:
            self._open.add(request)
        self._pool.submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # the handshake happens in the worker (_Handler.setup), so a slow client never stalls accept()
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: _Request, client_address: Any) -> None:
        log.debug("%s: connection from %s ended with an error", self.sandbox_host.name, client_address,
                  exc_info=True)

    def server_close(self) -> None:
        """Stop listening and end every kept-alive connection: a worker waiting on an idle client would otherwise
        hold the process open for up to IDLE_TIMEOUT at exit (the pool's threads are joined then)."""
        super().server_close()
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=False, cancel_futures=True)


class Listener:
    """One HTTP(S) listener of a host, running in its own thread."""

    def __init__(self, host: SandboxHost, bind: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.server = _BoundedServer((bind, port), host, tls)
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:

        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                         name=f"sbx-listen-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _BoundedServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()
        self.connection.settimeout(IDLE_TIMEOUT)
        # headers and body go out as separate writes: without this, Nagle + delayed ACK add ~40 ms per response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = self.server.sandbox_host
        self.auth = ConnectionAuth(tls=self.server.tls is not None, username=host.username, password=host.password)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("%s %s", self.server.sandbox_host.name, format % args)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        host = self.server.sandbox_host
        faults = host.faults
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_ENVELOPE_BYTES:
            self._drain_body(length)
            self._fault(wsman.Fault(400, 2150858909, "The WS-Management service cannot process the request because "
                                    "the request packet is larger than the maximum envelope size.",
                                    subcode="w:EncodingLimit", soap_code="s:Sender"), "", host.name)
            return
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0].rstrip("/").lower()
        counter, configuration = ENDPOINTS.get(path, ("other", ""))
        number = host.next_request_number()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.drop_after is not None and number > faults.drop_after:
            self._drop()
            return
        if not configuration:
            self._plain(404, b"")
            return
        if counter == "exchange" and (faults.exchange_unavailable or not host.web_sites_running()):
            # /PowerShell is an IIS application: with W3SVC stopped (a failed iisreset) http.sys answers 503
            host.count(counter, "unavailable")
            self._plain(503, b"Service Unavailable")
            return
        if faults.http_500:
            host.count(counter, "http_500")
            self._fault(wsman.Fault(500, 2147943418, "The WS-Management service encountered an internal error."),
                        "", host.name)
            return

        token = None
        authorization = self.headers.get("Authorization")
        if authorization and not faults.auth_fail:
            try:
                token = self.auth.step(authorization)
            except AuthFailed as exc:
                log.info("%s: authentication refused: %s", host.name, exc)
        elif authorization and faults.auth_fail:
            self.auth.authenticated = False
        if not self.auth.authenticated:
            host.count(counter, "auth")
            headers = [("WWW-Authenticate", f"Negotiate {token}")] if token else self.auth.challenge_headers()
            self._plain(401, b"", headers)
            return
        if not body:  # the blank request that completes the handshake before encryption starts
            host.count(counter, "auth")
            self._plain(200, b"", [("WWW-Authenticate", f"Negotiate {token}")] if token else [])
            return
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/encrypted"):
            try:
                body = self.auth.unwrap(body, content_type)
            except Exception:  # noqa: BLE001 - a bad signature is the client's problem, answered as WinRM does
                host.count(counter, "auth")
                self._plain(401, b"", self.auth.challenge_headers())
                return
        elif not self.auth.tls:
            host.count(counter, "auth")
            self._plain(400, b"")  # WinRM over HTTP refuses unencrypted bodies (AllowUnencrypted=false)
            return

        relates_to = ""
        try:
            request = wsman.parse_request(body)
            relates_to = request.message_id
            host.count(counter, request.action)
            response = self._dispatch(host, configuration, request)
        except wsman.Fault as fault:
            host.count(counter, "fault")
            self._fault(fault, relates_to, host.name)
            return
        except DropConnection:
            self._drop()
            return
        self._soap(200, response)

    def _dispatch(self, host: SandboxHost, configuration: str, request: wsman.Request) -> bytes:
        action = request.action
        if action == "Create":
            if request.configuration_name != configuration:
                raise wsman.Fault(400, 2150858770, f"The WS-Management service cannot process the request because "
                                  f"the resource URI {request.resource_uri} was not found on this endpoint.",
                                  subcode="w:DestinationUnreachable", soap_code="s:Sender")
            creation = request.body.find("rsp:Shell/pwsh:creationXml", wsman.NS)
            if creation is None or not creation.text:
                raise wsman.Fault(400, 2150858817, "The Create request carries no creationXml.",
                                  subcode="w:SchemaValidationError", soap_code="s:Sender")
            created = host.open_shell(configuration)
            created.create(creation.text)
            return self._created(created, request)
        shell = host.shell(request.shell_id or "")
        if shell is None or shell.configuration != configuration:
            raise wsman.invalid_selectors(request.shell_id or "(none)")
        if action == "Command":
            line = request.body.find("rsp:CommandLine", wsman.NS)
            args = line.find("rsp:Arguments", wsman.NS) if line is not None else None
            if line is None or args is None or not args.text:
                raise wsman.Fault(400, 2150858817, "The Command request carries no arguments.",
                                  subcode="w:SchemaValidationError", soap_code="s:Sender")
            started = shell.command(line.attrib.get("CommandId", ""), args.text)
            resp = wsman.rsp("CommandResponse")
            resp.append(wsman.rsp("CommandId", text=started))
            return wsman.envelope(action, request.message_id, [resp])
        if action == "Send":
            stream = request.body.find("rsp:Send/rsp:Stream", wsman.NS)
            if stream is None:
                raise wsman.Fault(400, 2150858817, "The Send request carries no stream.",
                                  subcode="w:SchemaValidationError", soap_code="s:Sender")
            shell.send(stream.attrib.get("CommandId"), stream.text or "")
            return wsman.envelope(action, request.message_id, [wsman.rsp("SendResponse")])
        if action == "Receive":
            desired = request.body.find("rsp:Receive/rsp:DesiredStream", wsman.NS)
            command_id = desired.attrib.get("CommandId") if desired is not None else None
            data, state = shell.receive(command_id, min(request.operation_timeout, 60.0),
                                        forced_timeout=host.faults.operation_timeout)
            resp = wsman.rsp("ReceiveResponse")

            attrib = {"Name": "stdout"}
            if command_id:
                attrib["CommandId"] = command_id.upper()
            resp.append(wsman.rsp("Stream", attrib, base64.b64encode(data).decode()))
            if state is not None and command_id:  # only a command's stream has a state, never the pool's
                resp.append(wsman.rsp("CommandState", {"CommandId": command_id.upper(), "State": state}))
            return wsman.envelope(action, request.message_id, [resp])
        if action == "Signal":
            signal = request.body.find("rsp:Signal", wsman.NS)
            shell.signal(signal.attrib.get("CommandId") if signal is not None else None)
            return wsman.envelope(action, request.message_id, [wsman.rsp("SignalResponse")])
        host.close_shell(shell.id)  # Delete
        return wsman.envelope(action, request.message_id, [])

    def _created(self, shell: Shell, request: wsman.Request) -> bytes:
        ns = wsman.NS
        created = ET.Element(f"{{{ns['wst']}}}ResourceCreated")
        address = f"http://{self.headers.get('Host', 'localhost')}{self.path}"
        ET.SubElement(created, f"{{{ns['wsa']}}}Address").text = address
        params = ET.SubElement(created, f"{{{ns['wsa']}}}ReferenceParameters")
        ET.SubElement(params, f"{{{ns['wsman']}}}ResourceURI").text = request.resource_uri
        selectors = ET.SubElement(params, f"{{{ns['wsman']}}}SelectorSet")
        ET.SubElement(selectors, f"{{{ns['wsman']}}}Selector", {"Name": "ShellId"}).text = shell.id
        info = wsman.rsp("Shell")
        for tag, text in (("ShellId", shell.id), ("ResourceUri", request.resource_uri),
                          ("Owner", self.server.sandbox_host.username),
                          ("ClientIP", self.client_address[0]), ("IdleTimeOut", "PT7200.000S"),
                          ("InputStreams", "stdin pr"), ("OutputStreams", "stdout")):
            info.append(wsman.rsp(tag, text=text))
        return wsman.envelope("Create", request.message_id, [created, info])

    # -- responses ---------------------------------------------------------------------------------------------------
    def _soap(self, status: int, payload: bytes) -> None:
        if self.auth.encrypting and not self.server.sandbox_host.faults.plaintext:
            content_type, payload = self.auth.wrap(payload)
        else:
            content_type = "application/soap+xml;charset=UTF-8"
        self._plain(status, payload, [("Content-Type", content_type)])

    def _fault(self, fault: wsman.Fault, relates_to: str, machine: str) -> None:
        self._soap(fault.http_status, wsman.fault_envelope(fault, relates_to, machine))

    def _plain(self, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _drain_body(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
