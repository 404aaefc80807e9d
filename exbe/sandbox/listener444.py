"""https port 444 of a sandbox host: http.sys serving the Exchange Back End certificate, IIS answering behind it.

At every TLS handshake the listener looks up the certificate bound to Exchange Back End's all-unassigned https
444 binding (``*:444:``, matched by meaning) *at that moment* (a bind done a second ago is served at once, as
http.sys does); no binding, an empty hash, a certificate missing from My or one without a usable private key make
the handshake fail. Behind TLS, any path answers 401 with ``WWW-Authenticate: Negotiate`` while W3SVC runs, and
http.sys's 503 when it does not (a failed ``iisreset`` leaves TLS answering with 503s).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .private import DIR_MODE, write_private
from .server import Reactor
from .state import BACKEND_SITE, HostState

_UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nWWW-Authenticate: Negotiate\r\n"
                 b"WWW-Authenticate: NTLM\r\nX-Powered-By: ASP.NET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
_UNAVAILABLE_BODY = (b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
                     b"<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2>"
                     b"<hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>\r\n")
_UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=us-ascii\r\n"
                b"Server: Microsoft-HTTPAPI/2.0\r\nContent-Length: " + str(len(_UNAVAILABLE_BODY)).encode()
                + b"\r\nConnection: close\r\n\r\n" + _UNAVAILABLE_BODY)


class BackendListener:
    """A TLS server standing for ``https://<host>:444`` (one request per connection), served by a :class:`Reactor`:
    the fleet's shared one, or one of its own when none is given."""

    def __init__(self, get_state: Callable[[], HostState], lock: AbstractContextManager[object],
                 host: str = "127.0.0.1", port: int = 0, cert_dir: Path | None = None, *,
                 reactor: Reactor | None = None, timeout: float = 10.0) -> None:
        self._get_state = get_state
        self._lock = lock
        self._address = (host, port)
        self._cert_dir = Path(cert_dir) if cert_dir else None
        self._reactor = reactor
        self._own_reactor = reactor is None
        self._timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._contexts_lock = threading.Lock()
        self._port: int | None = None
        self._base = self._new_context()
        self._base.sni_callback = self._choose_certificate  # also called when the client sends no server name

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the listener is not started")
        return self._port

    def start(self) -> None:
        if self._cert_dir is None:
            raise ValueError("BackendListener needs a cert_dir for the PEM files it serves")
        self._cert_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if self._reactor is None:
            self._reactor = Reactor().start()
        self._port = self._reactor.listen(self._serve, *self._address, self._base)

    def stop(self) -> None:
        """Stop the listener's own reactor; a shared one is stopped by the fleet that owns it."""
        if self._own_reactor and self._reactor is not None:
            self._reactor.stop()

    # -- connections -------------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After the handshake (done by the loop, certificate chosen by :meth:`_choose_certificate`): read the
        request head, answer as IIS does, close."""
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
        except asyncio.LimitOverrunError:
            pass  # a head over the reactor's MAX_HEAD_BYTES: IIS answers it all the same
        except (asyncio.IncompleteReadError, TimeoutError):
            return  # the client went away (or never sent a request): nothing to answer
        writer.write(_UNAUTHORIZED if self._w3svc_running() else _UNAVAILABLE)
        await writer.drain()

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
                write_private(path, pem + key_pem)
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
