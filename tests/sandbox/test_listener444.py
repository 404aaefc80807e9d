"""https port 444: the sandbox serves the certificate Exchange Back End *:444: carries, and IIS answers behind it."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from exbe.sandbox.faults import Faults
from exbe.sandbox.listener444 import BackendListener
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, CSP_PROVIDER, FRONTEND_SITE, LOOPBACK_BINDING, HostState
from exbe.sandbox.steps import run_step


class Backend:
    def __init__(self, state: HostState, listener: BackendListener, lock: threading.RLock) -> None:
        self.state, self.listener, self.lock = state, listener, lock

    def get(self, path: str = "/owa/") -> tuple[str, bytes]:
        """(thumbprint served, raw HTTP answer); raises ssl.SSLError when the handshake fails."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", self.listener.port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                thumb = hashlib.sha1(tls.getpeercert(binary_form=True)).hexdigest().upper()
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: exch01:444\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
        return thumb, answer


@pytest.fixture
def start_backend(tmp_path) -> Iterator:
    listeners: list[BackendListener] = []

    def start(scenario: str) -> Backend:
        state = HostState.from_scenario("exch01", scenario)
        lock = threading.RLock()
        listener = BackendListener(lambda: state, lock, host="127.0.0.1", port=0, cert_dir=tmp_path / "tls")
        listener.start()
        listeners.append(listener)
        return Backend(state, listener, lock)

    yield start
    for listener in listeners:
        listener.stop()


def bound(state: HostState) -> str:
    return state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash


@pytest.mark.parametrize("path", ["/owa/", "/ecp/", "/ews/exchange.asmx", "/mapi/", "/powershell/"])
def test_a_healthy_back_end_serves_the_bound_certificate_and_asks_for_windows_authentication(start_backend, path):
    backend = start_backend("healthy")
    thumb, answer = backend.get(path)
    assert thumb == bound(backend.state)
    assert answer.startswith(b"HTTP/1.1 401 ") and b"\r\nWWW-Authenticate: Negotiate\r\n" in answer


def test_the_served_certificate_switches_as_soon_as_bind_changes_the_binding(start_backend):
    backend = start_backend("backend_expiring")
    old = bound(backend.state)
    assert backend.get()[0] == old
    with backend.lock:
        clone = run_step(backend.state, "clone", {"source_thumbprint": old, "provider": CSP_PROVIDER,
                                                  "key_length": 2048, "hash_algorithm": "SHA256",
                                                  "validity_years": 5, "dry_run": False}, Faults())
        new = clone["data"]["new_thumbprint"]
        result = run_step(backend.state, "bind", {"thumbprint": new, "backend_site": BACKEND_SITE,
                                                  "frontend_site": FRONTEND_SITE, "backend_binding": BACKEND_BINDING,
                                                  "loopback_binding": LOOPBACK_BINDING, "loopback_from": old,
                                                  "after_trust": False, "dry_run": False}, Faults())
    assert result["ok"]
    assert backend.get()[0] == new


def test_with_w3svc_stopped_tls_still_completes_but_iis_answers_503(start_backend):
    backend = start_backend("w3svc_stopped")
    thumb, answer = backend.get()
    assert thumb == bound(backend.state) and answer.startswith(b"HTTP/1.1 503 ")


def test_a_failed_iisreset_leaves_tls_answering_with_503s(start_backend):
    backend = start_backend("healthy")
    with backend.lock:
        result = run_step(backend.state, "restart", {"method": "iisreset", "timeout_seconds": 30, "dry_run": False},
                          Faults(iisreset_timeout=True))
    assert not result["ok"]
    assert backend.get()[1].startswith(b"HTTP/1.1 503 ")


@pytest.mark.parametrize("scenario", ["binding_empty", "backend_missing", "binding_removed_by_update"])
def test_the_handshake_fails_when_444_has_no_usable_certificate(start_backend, scenario):
    backend = start_backend(scenario)
    with pytest.raises(ssl.SSLError):
        backend.get()


def test_the_all_unassigned_444_binding_is_served_whichever_way_iis_spells_it(start_backend):
    backend = start_backend("healthy")
    with backend.lock:
        backend.state.binding(BACKEND_SITE, BACKEND_BINDING).binding_information = ":444:"
    assert backend.get()[0] == bound(backend.state)


def test_old_weak_certificates_are_still_served_as_http_sys_would(start_backend):
    for scenario in ("sha1_backend", "weak_key"):
        backend = start_backend(scenario)
        assert backend.get()[0] == bound(backend.state)
