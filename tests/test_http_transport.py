"""exbe's HTTP beneath pypsrp (exbe/http_transport.py) says on the wire what pypsrp's requests transport said, for
every way a server is reached, and survives what a kept-alive connection meets in a long run: the server closing it
while idle."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from exbe import contract, http_transport
from exbe.config import Credentials
from exbe.inventory import load_inventory
from exbe.redaction import Secret
from exbe.render import render_step
from exbe.transport import Session

from .conftest import PASSWORD, USERNAME
from .test_transport_proxy import ConnectProxy

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}

#: How an agent reaches a server: (name, inventory changes). NTLM over HTTP encrypts every message; over HTTPS the
#: TLS channel carries it, with the channel binding token from the server's certificate.
WAYS = {
    "ntlm over http, message encryption": {},
    "negotiate over https": {"ssl": True, "exchange_ssl": True, "auth": "negotiate", "https": True},
    "basic over https": {"ssl": True, "exchange_ssl": True, "auth": "basic", "https": True},
}


def _server(fleet: Any, way: dict[str, Any], *, port: int | None = None) -> Any:
    (entry,) = fleet.inventory()
    changes = dict(way)
    if changes.pop("https", False):
        entry["port"] = entry["exchange_port"] = fleet.ports("exch01")["https"]
    entry.update(changes)
    if port is not None:
        entry["port"] = port
    return load_inventory({"inventory": [entry]})[0]


def _reads(server: Any, times: int = 1) -> list[dict[str, Any]]:
    """Open the WinRM pool, run the read-only facts script ``times`` times, close."""
    with Session(server, Credentials(USERNAME, Secret(PASSWORD))) as session:
        results = [session.run_scripts([render_step("facts", FACTS)], repeatable=True) for _ in range(times)]
    return [contract.parse_result("facts", result.output) for result in results]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_each_way_to_a_server_sends_the_requests_pypsrp_sent_and_reads_the_same_answer(fleet, monkeypatch, way):
    server = _server(fleet, way)
    host = fleet.host("exch01")
    host.reset_counts()
    ours = _reads(server)
    by_exbe = host.request_counts()
    host.reset_counts()
    monkeypatch.setattr("exbe.transport.usable", lambda *args: False)  # pypsrp's requests transport instead
    theirs = _reads(server)
    assert ours[0]["ok"] and theirs[0]["ok"]
    assert {**ours[0]["data"], "now": ""} == {**theirs[0]["data"], "now": ""}  # the server's clock moves on
    assert by_exbe == host.request_counts(), "the same requests, action by action, authentication included"


class Forwarder(ConnectProxy):
    """A TCP relay between the agent and a listener that can close every connection it carries, as a server
    (or a load balancer in front of it) closes kept-alive connections that sat idle."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.accepted = 0
        self._open: list[socket.socket] = []
        super().__init__()

    def _tunnel(self, client: socket.socket) -> None:  # every connection goes straight to the listener
        self.accepted += 1
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        self._open += [client, upstream]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    def close_idle_connections(self) -> None:
        for end in self._open:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._open.clear()

    def close(self) -> None:
        self.close_idle_connections()
        super().close()


@pytest.fixture
def forwarder(fleet: Any) -> Iterator[Forwarder]:
    relay = Forwarder(fleet.ports("exch01")["http"])
    yield relay
    relay.close()


def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced_before_the_next_request(fleet, forwarder):
    """A step after a long wait (another server's IIS restart, a slow renewal). Through pypsrp's requests transport
    the encrypted message went out on the new connection unauthenticated and the run failed as "authentication
    failed"."""
    server = _server(fleet, {}, port=forwarder.port)
    host = fleet.host("exch01")
    with Session(server, Credentials(USERNAME, Secret(PASSWORD))) as session:
        first = session.run_scripts([render_step("facts", FACTS)], repeatable=True)
        host.reset_counts()
        forwarder.close_idle_connections()
        second = session.run_scripts([render_step("facts", FACTS)], repeatable=False)
        counts = host.request_counts()["winrm"]
    assert contract.parse_result("facts", first.output)["ok"]
    assert contract.parse_result("facts", second.output)["ok"], "not lost: nothing was sent on the closed connection"
    assert forwarder.accepted == 2, "one new connection"
    assert counts.get("auth") == 3, "authenticated anew on it (NTLM's context belonged to the closed connection)"


def test_where_pyspnegos_ntlm_is_all_there_is_the_passwords_hashes_are_made_once_not_per_connection(start_fleet,
                                                                                                     exbe,
                                                                                                     monkeypatch):
    import spnego._ntlm

    client_credentials: list[str] = []  # the sandbox's NTLM acceptor, in this process too, reads its store instead
    real = spnego._ntlm._NTLMCredential.__init__

    def recording(self: Any, credential: Any = None) -> None:
        if type(credential).__name__ in ("Password", "NTLMHash"):  # a client's, not an acceptor's store
            client_credentials.append(type(credential).__name__)
        real(self, credential)

    monkeypatch.setattr(spnego._ntlm._NTLMCredential, "__init__", recording)
    monkeypatch.setattr(http_transport, "_python_ntlm_only", lambda: True)
    http_transport._hashed.cache_clear()
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy"), ("exch03", "healthy")])
    assert exbe(fleet, "verify", "--all").code == 0, "six NTLM connections, each accepted by the server"
    assert client_credentials == ["NTLMHash"] * 6, "no context hashed the password again"
    assert http_transport._hashed.cache_info().misses == 1


def test_with_sspi_or_gssapi_spnego_gets_the_username_and_password_as_pypsrp_gave_them(fleet, monkeypatch):
    import spnego

    given: list[tuple[Any, Any]] = []
    real = spnego.client
    monkeypatch.setattr(spnego, "client", lambda user, password, **kw: given.append((user, password)) or real(
        user, password, **kw))
    monkeypatch.setattr(http_transport, "_python_ntlm_only", lambda: False)
    assert _reads(_server(fleet, {}))[0]["ok"]
    assert given == [(USERNAME, PASSWORD)], "a hash credential would switch SSPI off on a Windows agent"


def test_servers_with_the_same_tls_settings_share_one_context_and_a_rewritten_ca_bundle_is_read_again(fleet,
                                                                                                     tmp_path):
    """Loading a CA bundle costs about 50 ms of CPU (certifi's): a fleet loads it once, not for each endpoint."""
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(fleet.ca_file.read_bytes())
    first = http_transport._tls_context(str(bundle))
    assert http_transport._tls_context(str(bundle)) is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    bundle.write_bytes(fleet.ca_file.read_bytes() * 2)  # a CA added to the bundle during a long-lived process
    assert http_transport._tls_context(str(bundle)) is not first
    unvalidated = http_transport._tls_context(False)
    assert http_transport._tls_context(False) is unvalidated
    assert unvalidated.verify_mode == ssl.CERT_NONE and not unvalidated.check_hostname
