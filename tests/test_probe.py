"""The agent's probe of https://server:444: what it sends, and that it reaches a back end by IPv6 address too."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from exbe.probe import backend_request, probe_backend
from exbe.sandbox.listener444 import BackendListener
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, HostState


@pytest.mark.parametrize(("host", "port", "header"), [
    ("exch01.contoso.local", 444, b"Host: exch01.contoso.local:444\r\n"),
    ("192.0.2.10", 444, b"Host: 192.0.2.10:444\r\n"),
    ("fd00::5", 444, b"Host: [fd00::5]:444\r\n"),
    ("::1", 443, b"Host: [::1]\r\n"),
])
def test_the_host_header_names_the_server_as_a_url_would_ipv6_in_brackets(host, port, header):
    request = backend_request(host, port)
    assert request.startswith(b"GET /owa/ HTTP/1.1\r\n") and request.endswith(b"\r\nConnection: close\r\n\r\n")
    assert header in request


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="this machine cannot bind ::1")


def bound_certificate(state: HostState) -> tuple[str, str, str]:
    """(thumbprint, certificate PEM, key PEM) of what Exchange Back End's *:444: binding carries."""
    thumbprint = state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash
    cert = state.find("My", thumbprint)
    assert cert is not None and cert.key_pem is not None
    return thumbprint, cert.pem, cert.key_pem


@pytest.fixture
def healthy_backend_on_ipv6(tmp_path) -> Iterator[tuple[HostState, BackendListener]]:
    state = HostState.from_scenario("exch01", "healthy")
    listener = BackendListener(lambda: state, threading.RLock(), host="::1", port=0, cert_dir=tmp_path / "tls")
    listener.start()
    yield state, listener
    listener.stop()


@needs_ipv6
def test_the_probe_reaches_a_back_end_listening_on_an_ipv6_address(healthy_backend_on_ipv6):
    state, listener = healthy_backend_on_ipv6
    probe = probe_backend("::1", listener.port, timeout=5)
    assert probe["tls"] == {"ok": True, "thumbprint": bound_certificate(state)[0], "error": None}
    assert probe["http"] == {"status": 401, "error": None}


@needs_ipv6
def test_to_an_ipv6_address_the_probe_sends_no_server_name_and_a_bracketed_host(tmp_path):
    """RFC 6066 (3): no IP literal in SNI; RFC 9110 (7.2): the Host of an IPv6 address is in brackets."""
    _, pem, key_pem = bound_certificate(HostState.from_scenario("exch01", "healthy"))
    (tmp_path / "backend.pem").write_text(pem + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "backend.pem")
    seen: dict[str, object] = {}
    context.sni_callback = lambda _sock, name, _ctx: seen.__setitem__("server_name", name)
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    listener.settimeout(5)

    def answer_once() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as tls:
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(1024)
            seen["head"] = head
            tls.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = threading.Thread(target=answer_once)
    server.start()
    try:
        port = listener.getsockname()[1]
        probe = probe_backend("::1", port, timeout=5)
    finally:
        server.join(timeout=10)
        listener.close()
    assert probe["http"] == {"status": 401, "error": None}
    assert seen["server_name"] is None
    assert seen["head"] == backend_request("::1", port)
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in seen["head"]
