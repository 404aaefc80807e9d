"""https port 444 of a sandbox host: http.sys serving the Exchange Back End certificate, IIS answering behind it.

At every TLS handshake the listener looks up the certificate bound to Exchange Back End's all-unassigned https
444 binding (``*:444:``, matched by meaning) *at that moment* (a bind done a second ago is served at once, as
http.sys does); no binding, an empty hash, a certificate missing from My or one without a usable private key make
the handshake fail. Behind TLS, any path answers 401 with ``WWW-Authenticate: Negotiate`` while W3SVC runs, and
http.sys's 503 when it does not (a failed ``iisreset`` leaves TLS answering with 503s).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

from .state import BACKEND_SITE, HostState

_MAX_HEAD = 16 * 1024
_UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nWWW-Authenticate: Negotiate\r\n"
                 b"WWW-Authenticate: NTLM\r\nX-Powered-By: ASP.NET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
_UNAVAILABLE_BODY = (b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
                     b"<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2>"
                     b"<hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>\r\n")
_UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=us-ascii\r\n"
                b"Server: Microsoft-HTTPAPI/2.0\r\nContent-Length: " + str(len(_UNAVAILABLE_BODY)).encode()
                + b"\r\nConnection: close\r\n\r\n" + _UNAVAILABLE_BODY)


class BackendListener:
    """A TLS server standing for ``https://<host>:444`` (bounded worker threads; one request per connection)."""

    def __init__(self, get_state: Callable[[], HostState], lock: AbstractContextManager[object],
                 host: str = "127.0.0.1", port: int = 0, cert_dir: Path | None = None, *, workers: int = 4,
                 timeout: float = 10.0) -> None:
        self._get_state = get_state
        self._lock = lock
        self._address = (host, port)
        self._cert_dir = Path(cert_dir) if cert_dir else None
        self._workers = workers
        self._timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._contexts_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers * 4)  # connections waiting or served; more are dropped
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._base = self._new_context()
        self._base.sni_callback = self._choose_certificate  # also called when the client sends no server name

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the listener is not started")
        port: int = self._sock.getsockname()[1]  # the address is (host, port, ...) for IPv4 and IPv6
        return port

    def start(self) -> None:
        if self._cert_dir is None:
            raise ValueError("BackendListener needs a cert_dir for the PEM files it serves")
        self._cert_dir.mkdir(parents=True, exist_ok=True)
        self._sock = socket.create_server(self._address)
        self._sock.settimeout(0.2)
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="exbe-444")
        self._thread = threading.Thread(target=self._accept_loop, name=f"exbe-444-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # -- connections -------------------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None and self._pool is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            self._pool.submit(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self._timeout)
            with self._base.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                tls.sendall(_UNAUTHORIZED if self._w3svc_running() else _UNAVAILABLE)
        except (OSError, ssl.SSLError):
            pass  # a failed handshake or a client gone away: nothing to answer
        finally:
            conn.close()
            self._slots.release()

    def _w3svc_running(self) -> bool:
        with self._lock:
            return self._get_state().services.get("W3SVC") == "Running"

    # -- certificates ------------------------------------------------------------------------------------------------
    def _choose_certificate(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        with self._lock:
            state = self._get_state()
            binding = state.https_binding(BACKEND_SITE, 444)
            cert = state.find(binding.certificate_store or "My", binding.certificate_hash) if binding else None
            usable = cert is not None and cert.key_pem is not None and bool(cert.key_accessible)
            pem, key_pem, thumb = (cert.pem, cert.key_pem, cert.thumbprint) if usable and cert else ("", "", "")
        if not usable:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        try:
            sock.context = self._context_for(thumb, pem, key_pem or "")
        except (OSError, ssl.SSLError):
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _context_for(self, thumb: str, pem: str, key_pem: str) -> ssl.SSLContext:
        with self._contexts_lock:
            context = self._contexts.get(thumb)
            if context is None:
                assert self._cert_dir is not None
                path = self._cert_dir / f"{thumb}.pem"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(pem + key_pem)
                context = self._new_context()
                context.load_cert_chain(path)
                self._contexts[thumb] = context
            return context

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Old servers carry SHA-1/MD5 signed or 1024-bit certificates; http.sys serves them, so must we.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context
