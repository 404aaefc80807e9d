"""The environment's proxy settings are read once per endpoint, not on every request, and still honoured: through an
``HTTPS_PROXY`` (a CONNECT tunnel) when one is set, around it for hosts in ``NO_PROXY``, and directly without one."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest
import requests.utils

from exbe import contract
from exbe.config import Credentials
from exbe.inventory import load_inventory
from exbe.redaction import Secret
from exbe.render import render_step
from exbe.transport import Session

from .conftest import PASSWORD, USERNAME

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}


class ConnectProxy:
    """A forward proxy that only tunnels (HTTP CONNECT, RFC 9110 9.3.6), as corporate proxies do for HTTPS."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tunnels: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        """Copy ``source`` to ``sink`` until either ends (one direction of a relayed connection)."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy()
    yield running
    running.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every per-request look at the environment's proxy settings (requests.utils.resolve_proxies with trust_env)."""
    seen: list[str] = []
    original = requests.utils.should_bypass_proxies

    def counting(url: str, no_proxy: str | None) -> bool:
        seen.append(url)
        return original(url, no_proxy)

    monkeypatch.setattr(requests.utils, "should_bypass_proxies", counting)
    return seen


def _read_over_https(fleet) -> str:
    """Open a pool, run a read, close: five requests on the WinRM endpoint; returns its URL."""
    server = load_inventory({"inventory": fleet.inventory(ssl_basic=True)})[0]
    with Session(server, Credentials(USERNAME, Secret(PASSWORD))) as session:
        result = session.run_scripts([render_step("facts", FACTS)], repeatable=True)
    assert contract.parse_result("facts", result.output)["ok"]
    assert sum(fleet.host("exch01").request_counts()["winrm"].values()) == 5
    return f"https://127.0.0.1:{fleet.ports('exch01')['https']}/wsman"


def _clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_without_a_proxy_requests_go_direct_and_the_environment_is_not_read_per_request(fleet, monkeypatch, lookups):
    _clear_proxy_environment(monkeypatch)
    scans: list[int] = []
    getproxies = urllib.request.getproxies
    monkeypatch.setattr(urllib.request, "getproxies", lambda: scans.append(1) or getproxies())
    _read_over_https(fleet)
    fleet.host("exch01").reset_counts()
    _read_over_https(fleet)  # a second server's endpoint, as far as the environment is concerned
    assert lookups == [], "the environment names no proxy: no endpoint has one to bypass"
    assert len(scans) <= 1, "the environment was looked at once for every endpoint (none if already decided)"


def test_an_https_proxy_from_the_environment_carries_every_request(fleet, monkeypatch, proxy, lookups):
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    endpoint = _read_over_https(fleet)
    port = fleet.ports("exch01")["https"]
    assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{port}"}
    assert lookups == [endpoint]


def test_a_host_in_no_proxy_is_reached_directly(fleet, monkeypatch, proxy):
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _read_over_https(fleet)
    assert proxy.tunnels == []
