"""From the agent: does https://server:444 serve the bound certificate, and does IIS answer behind it?

A TLS handshake alone is not enough: after a failed ``iisreset`` http.sys still completes handshakes on 444 with
the sites down. So the same connection also sends an unauthenticated request to a back-end virtual directory, which
answers 401 when healthy and 500/503 when not.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
from typing import Any

from .inventory import url_host

BACKEND_PATH = "/owa/"


def probe_backend(host: str, port: int, timeout: float = 10.0) -> dict[str, Any]:
    """``{"tls": {...}, "http": {...}}`` as exbe.checks expects; a port that cannot be reached gives ``tls`` None
    with the reason in ``unreachable`` (the checks then skip rather than pass).

    ``host`` is as the inventory keeps it: a DNS name, an IPv4 address or an IPv6 address without brackets."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return {"tls": None, "http": None, "unreachable": f"port {port} on {host} not reachable from this agent: {exc}"}
    try:
        try:
            # No server name: http.sys serves the *:444: binding by IP and port, whatever name the client sends,
            # and an IP literal must never go into SNI (RFC 6066, section 3).
            tls = _context().wrap_socket(raw, server_hostname=None)
        except (ssl.SSLError, OSError) as exc:
            return {"tls": {"ok": False, "thumbprint": None, "error": f"TLS handshake failed: {exc}"}, "http": None}
        with tls:
            der = tls.getpeercert(binary_form=True)
            thumbprint = hashlib.sha1(der).hexdigest().upper() if der else None
            result: dict[str, Any] = {"tls": {"ok": True, "thumbprint": thumbprint, "error": None}}
            result["http"] = _http_status(tls, backend_request(host, port))
            return result
    finally:
        raw.close()


@functools.cache
def _context() -> ssl.SSLContext:
    """One client context for every probe: OpenSSL 3 spends about 0.3 ms making one, and its settings never vary.
    The back-end certificate is self-signed by design; exbe compares its thumbprint, not its chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def backend_request(host: str, port: int) -> bytes:
    """The unauthenticated GET the probe sends: ``Host`` as RFC 9110 (7.2) wants it, an IPv6 address in brackets
    and the port unless it is https's default 443."""
    authority = url_host(host) if port == 443 else f"{url_host(host)}:{port}"
    return f"GET {BACKEND_PATH} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode("ascii")


def _http_status(sock: ssl.SSLSocket, request: bytes) -> dict[str, Any]:
    try:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
        parts = head.split(b"\r\n", 1)[0].split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
        return {"status": status, "error": None if status else "no HTTP answer"}
    except (OSError, ssl.SSLError) as exc:
        return {"status": None, "error": f"HTTP request failed: {exc}"}
