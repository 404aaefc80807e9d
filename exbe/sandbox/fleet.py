"""A fleet of sandbox Exchange servers on loopback: start, stop, describe as an exbe inventory.

Each host listens on its own free loopback ports: WinRM over HTTP (Negotiate/NTLM with message encryption, the
default) and HTTPS (a certificate issued by the sandbox CA; Basic allowed only here), both serving ``/wsman`` and
Exchange's ``/PowerShell``; and a TLS listener standing for IIS's https port 444. One event loop thread serves every
host's listeners and connections (:class:`~exbe.sandbox.server.Reactor`), so a fleet of a thousand is one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import shlex
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .auth import install_accounts
from .certs import SandboxCA
from .faults import Faults
from .host import SandboxHost
from .listener444 import BackendListener
from .private import DIR_MODE, write_private
from .server import Reactor, listen
from .state import HostState, scenario_names

log = logging.getLogger("exbe.sandbox")

#: The default mix for a new user's first run: each of these ends verified after `exbe renew` (the scenarios where
#: exbe must stop, or where verify stays red for something exbe does not renew, are in the tests and `--scenarios`).
MIXED_SCENARIOS = (
    "healthy",
    "backend_expiring",
    "backend_expired",
    "sha1_backend",
    "cng_backend",
    "binding_empty",
)
DEFAULT_USERNAME = "SANDBOX\\exbe-admin"
BIND = "127.0.0.1"


SIMULATED_PREFIX = "sim-"
#: three listening sockets per host, and room for the connections clients keep open to it
FILES_PER_HOST = 8


def plan_hosts(count: int, scenarios: str | Iterable[str] = "mixed") -> list[tuple[str, str]]:
    """``[(name, scenario)]`` for ``count`` hosts sim-exch01..; ``scenarios`` is ``mixed``, one name, or a list
    cycled. The ``sim-`` prefix keeps a simulated server from being taken for (or named like) a production one."""
    if isinstance(scenarios, str):
        chosen = (list(MIXED_SCENARIOS) if scenarios == "mixed"
                  else [s.strip() for s in scenarios.split(",") if s.strip()])
    else:
        chosen = list(scenarios)
    known = set(scenario_names())
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown sandbox scenario {', '.join(unknown) or '(none)'}; "
                         f"known: {', '.join(sorted(known))}")
    width = max(2, len(str(count)))
    return [(f"{SIMULATED_PREFIX}exch{i + 1:0{width}d}", chosen[i % len(chosen)]) for i in range(count)]


def _allow_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files towards ``needed`` (never above the hard limit): a
    thousand-host fleet needs more than the usual default of 1024."""
    try:
        import resource
    except ImportError:  # Windows has no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        log.info("open-file limit raised from %d to %d for %d sandbox hosts", soft, wanted, needed // FILES_PER_HOST)


@dataclasses.dataclass
class _Running:
    host: SandboxHost
    http_port: int
    https_port: int
    backend: BackendListener


class Fleet:
    """Sandbox hosts started together; a context manager. State persists in ``state_dir/<name>.json``; with
    ``state_dir`` None, in a new temporary directory that :meth:`stop` removes, whatever the run's outcome (it holds
    the sandbox account's password and the CA's private key)."""

    def __init__(
        self,
        state_dir: Path | None,
        hosts: list[tuple[str, str]],
        *,
        faults: dict[str, Faults] | None = None,
        latency_ms: int = 0,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        fresh: bool = True,
    ) -> None:
        self._temporary = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="exbe-sandbox-") if state_dir is None else state_dir)
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self._plan = hosts
        self._faults = faults or {}
        self._latency_ms = latency_ms
        self._fresh = fresh
        self._running: dict[str, _Running] = {}
        self._reactor: Reactor | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> Fleet:
        """Write the accounts, CA and host states (owner-only: they hold the password and private keys) and serve
        every host's three listeners from one :class:`Reactor`."""
        self.state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        install_accounts(self.state_dir / "ntlm-users", self.username, self.password)
        ca = SandboxCA.load_or_create(self.state_dir)
        self.ca_file.write_text(ca.ca_pem, encoding="utf-8")
        tls = self._tls_context(ca)
        _allow_open_files(FILES_PER_HOST * len(self._plan))
        self._reactor = Reactor().start()
        try:
            for name, scenario in self._plan:
                self._running[name] = self._start_host(self._reactor, name, scenario, tls)
        except BaseException:
            self.stop()
            raise
        log.info("sandbox fleet of %d hosts started in %s", len(self._running), self.state_dir)
        return self

    def stop(self) -> None:
        """End every shell (a long-poll Receive returns), then every listener and connection at once; then remove a
        temporary state directory."""
        try:
            for running in self._running.values():
                running.host.close_all_shells()
            if self._reactor is not None:
                self._reactor.stop()
                self._reactor = None
            self._running.clear()
        finally:
            if self._temporary:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def write_credentials(self) -> Path:
        """``credentials.env`` in the state directory: the sandbox account as shell exports, owner-only."""
        path = self.state_dir / "credentials.env"
        write_private(path, f"export EXBE_USERNAME={shlex.quote(self.username)}\n"
                            f"export EXBE_PASSWORD={shlex.quote(self.password)}\n")
        return path

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_host(self, reactor: Reactor, name: str, scenario: str, tls: ssl.SSLContext) -> _Running:
        path = self.state_dir / f"{name}.json"
        if path.exists() and not self._fresh:
            state = HostState.load(path)
        else:
            state = HostState.from_scenario(name, scenario)
            state.save(path)
        faults = dataclasses.replace(self._faults.get(name) or self._faults.get("*") or Faults())
        if self._latency_ms and not faults.latency_ms:
            faults.latency_ms = self._latency_ms
        host = SandboxHost(name, state, path, username=self.username, password=self.password, faults=faults)
        backend = BackendListener(lambda: host.state, host.lock, host=BIND, port=0, cert_dir=self.state_dir / "tls",
                                  reactor=reactor)
        backend.start()
        return _Running(host, listen(reactor, host, BIND, 0, None), listen(reactor, host, BIND, 0, tls), backend)

    def _tls_context(self, ca: SandboxCA) -> ssl.SSLContext:
        cert_pem, key_pem = ca.issue_server_cert(["localhost"], [BIND])
        cert_file, key_file = self.state_dir / "winrm-https.pem", self.state_dir / "winrm-https.key"
        cert_file.write_text(cert_pem, encoding="utf-8")
        write_private(key_file, key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context

    # -- access ------------------------------------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.state_dir / "sandbox-ca.pem"

    @property
    def hosts(self) -> dict[str, SandboxHost]:
        return {name: running.host for name, running in self._running.items()}

    def host(self, name: str) -> SandboxHost:
        return self._running[name].host

    def ports(self, name: str) -> dict[str, int]:
        running = self._running[name]
        return {"http": running.http_port, "https": running.https_port, "backend": running.backend.port}

    def inventory(self, *, ssl_basic: bool = False) -> list[dict[str, Any]]:
        """Inventory entries for exbe's configuration (``exbe.inventory``)."""
        entries = []
        for name, running in self._running.items():
            port = running.https_port if ssl_basic else running.http_port
            entries.append({
                "name": name,
                "host": BIND,
                "port": port,
                "ssl": ssl_basic,
                "auth": "basic" if ssl_basic else "ntlm",
                "ca_file": str(self.ca_file),
                "exchange_port": port,
                "exchange_ssl": ssl_basic,
                "backend_port": running.backend.port,
                "groups": ["sandbox", running.host.state.scenario],
            })
        return entries

    def write_inventory(self, path: Path, *, ssl_basic: bool = False) -> Path:
        """Write an ``exbe.yaml`` that exbe's normal configuration reads (JSON is valid YAML)."""
        document = {"exbe": {"inventory": self.inventory(ssl_basic=ssl_basic)}}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path

    def request_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        return {name: running.host.request_counts() for name, running in self._running.items()}
