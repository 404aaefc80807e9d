"""The HTTP side of the sandbox: WinRM's ``/wsman`` and Exchange's ``/PowerShell``, every host on one event loop.

A :class:`Reactor` (one per fleet) runs a single asyncio event loop thread that owns every listening socket and
every connection of every host — WinRM over HTTP and HTTPS and the 444 listener (:mod:`.listener444`): accepting,
TLS, reading requests, the injected latency (a timer on the loop, not a sleeping thread) and writing answers. What
happens in between (NTLM, message encryption, WSMan, PSRP, the steps) runs in one bounded worker pool shared by all
hosts, one request at a time per connection, as HTTP/1.1 without pipelining is (pypsrp never pipelines). So a
1000-host fleet is one process with a loop thread and ``WORKERS`` workers, and nothing polls while it is idle.

An idle keep-alive connection is closed after ``IDLE_TIMEOUT`` seconds, as http.sys does; :meth:`Reactor.stop` ends
every connection at once, so no thread waits on an idle client when the process exits.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import http
import logging
import ssl
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from . import wsman
from .auth import AuthFailed, ConnectionAuth
from .psrp import DropConnection, Shell

if TYPE_CHECKING:
    from .host import SandboxHost

log = logging.getLogger("exbe.sandbox")

#: Endpoint path -> (counter name, PSRP configuration it serves)
ENDPOINTS = {"/wsman": ("winrm", "Microsoft.PowerShell"), "/powershell": ("exchange", "Microsoft.Exchange")}
MAX_ENVELOPE_BYTES = 1024 * 1024  # encrypted 500 KiB envelopes plus MIME overhead
MAX_HEAD_BYTES = 64 * 1024  # request line and headers
IDLE_TIMEOUT = 120.0
HANDSHAKE_TIMEOUT = 10.0
#: Request handlers shared by every host of a reactor. A handler blocks only on a host's lock or a long-poll
#: Receive waiting for output (rare: exbe's pipelines finish within the Command request that starts them).
WORKERS = 32
SERVER_HEADER = "Microsoft-HTTPAPI/2.0"  # what http.sys sends for WinRM (the captures in shared/psrp-facts.md)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]
_T = TypeVar("_T")


class Reactor:
    """One event loop thread for the listeners and connections of many hosts, plus the shared worker pool."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_log_loop_error)
        self._thread = threading.Thread(target=self._loop.run_forever, name="sbx-loop", daemon=True)
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sbx-work")
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def start(self) -> Reactor:
        self._thread.start()
        return self

    def listen(self, handler: Handler, bind: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Serve ``handler`` on (bind, port) from the loop; returns the port (a free one for port 0)."""
        async def open_server() -> asyncio.Server:
            if sys.version_info >= (3, 11):  # the handshake in the connection's task (_connection)
                return await asyncio.start_server(lambda r, w: self._connection(handler, tls, r, w), bind, port,
                                                  limit=MAX_HEAD_BYTES, backlog=128)
            # 3.10: asyncio does the handshake before the task starts (a stop leaves those still in it to the GC)
            return await asyncio.start_server(lambda r, w: self._connection(handler, None, r, w), bind, port,
                                              ssl=tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
                                              limit=MAX_HEAD_BYTES, backlog=128)

        server = self._call(open_server())
        self._servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    async def work(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking ``function(*args)`` in the worker pool (from a connection's coroutine)."""
        return await self._loop.run_in_executor(self._workers, function, *args)

    def stop(self) -> None:
        """Close every listener and connection, stop the loop, release the workers (no wait on idle clients)."""
        if self._thread.is_alive():
            self._call(self._close_everything())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _connection(self, handler: Handler, tls: ssl.SSLContext | None, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if tls is not None and sys.version_info >= (3, 11):
                # the handshake inside the tracked connection, so that a stop also ends connections still in it
                await writer.start_tls(tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass  # the client went away or sent what cannot be answered: nothing more to say on this connection
        except Exception:  # noqa: BLE001 - one connection's failure must not reach the loop
            log.debug("sandbox connection from %s ended with an error", writer.get_extra_info("peername"),
                      exc_info=True)
        finally:
            del self._connections[task]
            writer.close()  # what is still buffered goes out first

    async def _close_everything(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed TLS handshakes (a 444 binding with no usable certificate) and clients gone away are normal here."""
    log.debug("sandbox event loop: %s", context.get("message"), exc_info=context.get("exception"))


# -- HTTP --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    too_large: bool = False  # a body over MAX_ENVELOPE_BYTES, read and discarded

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """The next request on a connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    if length > MAX_ENVELOPE_BYTES:
        remaining = length
        while remaining > 0:
            remaining -= len(await reader.readexactly(min(remaining, 65536)))
        return HttpRequest(method, target, headers, b"", too_large=True)
    return HttpRequest(method, target, headers, await reader.readexactly(length) if length else b"")


def http_response(status: int, payload: bytes = b"", headers: list[tuple[str, str]] | None = None) -> bytes:
    """Status line, http.sys's Server and Date headers, ``headers``, Content-Length, body."""
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", f"Server: {SERVER_HEADER}",
             f"Date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def listen(reactor: Reactor, host: SandboxHost, bind: str, port: int, tls: ssl.SSLContext | None) -> int:
    """Serve ``host``'s ``/wsman`` and ``/PowerShell`` on (bind, port), over TLS when ``tls``; returns the port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # (asyncio sets TCP_NODELAY on every connection: no Nagle + delayed-ACK wait per answer)
        connection = _Connection(host, tls=tls is not None, client_ip=str(writer.get_extra_info("peername")[0]))
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader), IDLE_TIMEOUT)
            except TimeoutError:
                return  # idle keep-alive connection: closed, as http.sys does
            except (ValueError, UnicodeDecodeError):
                writer.write(http_response(400))
                return
            if request is None:
                return
            if host.faults.latency_ms and not request.too_large:
                await asyncio.sleep(host.faults.latency_ms / 1000)
            answer = await reactor.work(connection.handle, request)
            if answer is None:  # the fault drops the connection without an answer
                return
            if answer is HANG:  # the fault never answers: the connection stays open until the client closes it
                await reader.read()
                return
            writer.write(answer)
            await writer.drain()
            if not request.keep_alive:
                return

    return reactor.listen(serve, bind, port, tls)


#: What :meth:`_Connection.handle` returns for a request the server never answers (fault ``hang_from``).
HANG = b"(no answer: fault hang_from)"


class _Connection:
    """One client connection of a host: its authentication and encryption state, and what it answers each request
    (run in a worker; None means: drop the connection without answering)."""

    def __init__(self, host: SandboxHost, *, tls: bool, client_ip: str) -> None:
        self.host = host
        self.client_ip = client_ip
        self.auth = ConnectionAuth(tls=tls, username=host.username, password=host.password)

    def handle(self, request: HttpRequest) -> bytes | None:
        host = self.host
        faults = host.faults
        if request.too_large:
            return self._fault(wsman.Fault(400, 2150858909, "The WS-Management service cannot process the request "
                                           "because the request packet is larger than the maximum envelope size.",
                                           subcode="w:EncodingLimit", soap_code="s:Sender"), "")
        if request.method != "POST":
            return http_response(501)
        path = request.target.split("?")[0].rstrip("/").lower()
        counter, configuration = ENDPOINTS.get(path, ("other", ""))
        number = host.next_request_number()
        if faults.drop_after is not None and number > faults.drop_after:
            return None
        number = host.next_endpoint_request_number(counter)
        if faults.drops(counter, number):
            return None
        if faults.hangs(counter, number):
            host.count(counter, "hang")
            return HANG
        if not configuration:
            return http_response(404)
        if counter == "exchange" and (faults.exchange_unavailable or not host.web_sites_running()):
            # /PowerShell is an IIS application: with W3SVC stopped (a failed iisreset) http.sys answers 503
            host.count(counter, "unavailable")
            return http_response(503, b"Service Unavailable")
        if faults.http_500:
            host.count(counter, "http_500")
            return self._fault(wsman.Fault(500, 2147943418, "The WS-Management service encountered an internal "
                                           "error."), "")

        token = None
        authorization = request.headers.get("authorization")
        if authorization and not faults.auth_fail:
            try:
                token = self.auth.step(authorization)
            except AuthFailed as exc:
                log.info("%s: authentication refused: %s", host.name, exc)
        elif authorization and faults.auth_fail:
            self.auth.authenticated = False
        if not self.auth.authenticated:
            host.count(counter, "auth")
            return http_response(401, b"", [("WWW-Authenticate", f"Negotiate {token}")] if token
                                 else self.auth.challenge_headers())
        body = request.body
        if not body:  # the blank request that completes the handshake before encryption starts
            host.count(counter, "auth")
            return http_response(200, b"", [("WWW-Authenticate", f"Negotiate {token}")] if token else [])
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/encrypted"):
            try:
                body = self.auth.unwrap(body, content_type)
            except Exception:  # noqa: BLE001 - a bad signature is the client's problem, answered as WinRM does
                host.count(counter, "auth")
                return http_response(401, b"", self.auth.challenge_headers())
        elif not self.auth.tls:
            host.count(counter, "auth")
            return http_response(400)  # WinRM over HTTP refuses unencrypted bodies (AllowUnencrypted=false)

        relates_to = ""
        if faults.fails(counter, number):  # read (and decrypted) as WinRM does, then refused before acting on it
            host.count(counter, "http_500")
            return self._fault(wsman.Fault(500, 2147943418, "The WS-Management service encountered an internal "
                                           "error."), wsman.parse_request(body).message_id)
        try:
            wsman_request = wsman.parse_request(body)
            relates_to = wsman_request.message_id
            host.count(counter, wsman_request.action)
            response = self._dispatch(configuration, wsman_request, request)
        except wsman.Fault as fault:
            host.count(counter, "fault")
            return self._fault(fault, relates_to)
        except DropConnection:
            return None
        return self._soap(200, response)

    def _dispatch(self, configuration: str, request: wsman.Request, http_request: HttpRequest) -> bytes:
        host = self.host
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
            return self._created(created, request, http_request)
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

    def _created(self, shell: Shell, request: wsman.Request, http_request: HttpRequest) -> bytes:
        ns = wsman.NS
        created = ET.Element(f"{{{ns['wst']}}}ResourceCreated")
        address = f"http://{http_request.headers.get('host', 'localhost')}{http_request.target}"
        ET.SubElement(created, f"{{{ns['wsa']}}}Address").text = address
        params = ET.SubElement(created, f"{{{ns['wsa']}}}ReferenceParameters")
        ET.SubElement(params, f"{{{ns['wsman']}}}ResourceURI").text = request.resource_uri
        selectors = ET.SubElement(params, f"{{{ns['wsman']}}}SelectorSet")
        ET.SubElement(selectors, f"{{{ns['wsman']}}}Selector", {"Name": "ShellId"}).text = shell.id
        info = wsman.rsp("Shell")
        for tag, text in (("ShellId", shell.id), ("ResourceUri", request.resource_uri),
                          ("Owner", self.host.username), ("ClientIP", self.client_ip),
                          ("IdleTimeOut", "PT7200.000S"), ("InputStreams", "stdin pr"), ("OutputStreams", "stdout")):
            info.append(wsman.rsp(tag, text=text))
        return wsman.envelope("Create", request.message_id, [created, info])

    def _soap(self, status: int, payload: bytes) -> bytes:
        if self.auth.encrypting and not self.host.faults.plaintext:
            content_type, payload = self.auth.wrap(payload)
        else:
            content_type = "application/soap+xml;charset=UTF-8"
        return http_response(status, payload, [("Content-Type", content_type)])

    def _fault(self, fault: wsman.Fault, relates_to: str) -> bytes:
        return self._soap(fault.http_status, wsman.fault_envelope(fault, relates_to, self.host.name))
