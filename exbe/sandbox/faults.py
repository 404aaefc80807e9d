"""Faults a sandbox host injects on demand (Python API, CLI ``--fault``, ``EXBE_SANDBOX_FAULTS``).

A fault spec is a comma-separated list of ``kind`` or ``kind=value`` items, e.g.
``step_fail=bind,latency_ms=50`` or ``bind_com_error`` or ``drop_after=12``. Per host, prefix with the host name
and a colon in the CLI/env form: ``sim-exch02:bind_com_error;sim-exch03:auth_fail``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .records import ErrorInfo

#: The endpoints drop_request counts on (exbe.sandbox.server.ENDPOINTS' counter names).
DROP_ENDPOINTS = ("winrm", "exchange")
#: kind -> (type of value, description)
FAULT_KINDS: dict[str, tuple[type, str]] = {
    "step_fail": (str, "the named WinRM step (or Exchange cmdlet) ends in a terminating error record: in a pipeline "
                       "of several statements the record goes to the error stream and the next statement runs (as "
                       "PowerShell's batch does); a pipeline of one statement ends Failed"),
    "runspace_lost": (str, "the runspace is lost while the named WinRM step (or Exchange cmdlet) runs: the whole "
                           "pipeline ends Failed, however many statements it holds"),
    "exchange_denied": (str, "CMDLET[+CMDLET...]: the Exchange account's RBAC roles do not grant these cmdlets, so "
                             "Exchange's session does not contain them (CommandNotFoundException)"),
    "bind_com_error": (bool, "binding a certificate fails with IIS's COM error 0x80070520 (no usable private key)"),
    "iisreset_timeout": (bool, "iisreset/Restart-Service times out and leaves W3SVC stopped; TLS on 444 still answers"),
    "iisreset_stop_pending": (bool, "iisreset /noforce times out while stopping W3SVC and leaves it StopPending"),
    "drop_after": (int, "the HTTP connection is dropped (no response) from request number N+1 on"),
    "drop_in_step": (str, "the connection drops while the named step runs (after its change is applied)"),
    "drop_request": (str, "ENDPOINT:N (winrm or exchange): only that endpoint's N-th HTTP request (from 1, "
                          "authentication rounds included) is dropped unanswered, before the server acts on it; the "
                          "others are served"),
    "fail_request": (str, "ENDPOINT:N (winrm or exchange): only that endpoint's N-th HTTP request (counted as "
                          "drop_request counts) answers HTTP 500 with a WSMan internal-error fault, before the server "
                          "acts on it"),
    "hang_from": (str, "ENDPOINT:N (winrm or exchange): from that endpoint's N-th HTTP request on (counted as "
                       "drop_request counts), the server reads each request and never answers, holding the "
                       "connection open until the client gives up (a server that stopped answering)"),
    "latency_ms": (int, "added latency per HTTP request, in milliseconds (a WAN round trip)"),
    "auth_fail": (bool, "every authentication attempt is refused with 401"),
    "http_500": (bool, "every WSMan request answers HTTP 500 with a WSMan internal-error fault"),
    "operation_timeout": (bool, "every Receive answers the WSMan operation-timeout fault, never data"),
    "exchange_unavailable": (bool, "the Exchange endpoint (/PowerShell) answers 503, as when its app pool is down"),
    "plaintext": (bool, "after NTLM authentication over HTTP, answers without message encryption (a forger on the "
                        "path)"),
}


@dataclasses.dataclass
class Faults:
    """The faults active on one host. All off by default."""

    step_fail: str | None = None
    runspace_lost: str | None = None
    exchange_denied: str | None = None
    bind_com_error: bool = False
    iisreset_timeout: bool = False
    iisreset_stop_pending: bool = False
    drop_after: int | None = None
    drop_in_step: str | None = None
    drop_request: str | None = None
    fail_request: str | None = None
    hang_from: str | None = None
    latency_ms: int = 0
    auth_fail: bool = False
    http_500: bool = False
    operation_timeout: bool = False
    exchange_unavailable: bool = False
    plaintext: bool = False

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        """Parse ``kind[=value],...``; raises ValueError naming an unknown kind or a bad value."""
        faults = cls()
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            kind, _, raw = item.partition("=")
            kind = kind.strip()
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown sandbox fault {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
            typ = FAULT_KINDS[kind][0]
            value: Any
            if typ is bool:
                value = raw.strip().lower() not in {"0", "false", "no", "off"} if raw else True
            elif typ is int:
                try:
                    value = int(raw)
                except ValueError:
                    raise ValueError(f"sandbox fault {kind} needs a whole number, got {raw!r}") from None
            else:
                if not raw:
                    raise ValueError(f"sandbox fault {kind} needs a value, e.g. {kind}=bind")
                value = raw.strip()
            setattr(faults, kind, value)
        faults.dropped_request()  # checks their form
        faults._request("fail_request", faults.fail_request)
        faults._request("hang_from", faults.hang_from)
        return faults

    def dropped_request(self) -> tuple[str, int] | None:
        """``drop_request`` as (endpoint, request number); raises ValueError when it is not ``ENDPOINT:N``."""
        return self._request("drop_request", self.drop_request)

    def drops(self, endpoint: str, number: int) -> bool:
        """Whether the ``number``-th request on ``endpoint`` is dropped (``drop_request``)."""
        return self.dropped_request() == (endpoint, number)

    def fails(self, endpoint: str, number: int) -> bool:
        """Whether the ``number``-th request on ``endpoint`` answers HTTP 500 (``fail_request``)."""
        return self._request("fail_request", self.fail_request) == (endpoint, number)

    def hangs(self, endpoint: str, number: int) -> bool:
        """Whether the ``number``-th request on ``endpoint`` goes unanswered (``hang_from``)."""
        hang = self._request("hang_from", self.hang_from)
        return hang is not None and hang[0] == endpoint and number >= hang[1]

    @staticmethod
    def _request(kind: str, spec: str | None) -> tuple[str, int] | None:
        if spec is None:
            return None
        endpoint, _, number = spec.partition(":")
        if endpoint not in DROP_ENDPOINTS or not number.isdigit() or int(number) < 1:
            raise ValueError(f"sandbox fault {kind} needs ENDPOINT:N with ENDPOINT {' or '.join(DROP_ENDPOINTS)} "
                             f"and N from 1, got {spec!r}")
        return endpoint, int(number)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False, 0)}


def parse_fleet_faults(spec: str | None) -> dict[str, Faults]:
    """Parse ``host:spec;host:spec`` (``*`` for every host) into per-host :class:`Faults`."""
    result: dict[str, Faults] = {}
    for part in (spec or "").split(";"):
        part = part.strip()
        if not part:
            continue
        host, sep, body = part.partition(":")
        if not sep:
            host, body = "*", part
        result[host.strip()] = Faults.parse(body)
    return result


def runspace_lost(where: str) -> ErrorInfo:
    """The record of fault ``runspace_lost``: says it is the sandbox's (no capture of a real lost runspace's text)."""
    return ErrorInfo(f"The runspace was lost while '{where}' ran (fault runspace_lost injected by the exbe sandbox).",
                     error_id="SandboxRunspaceLost", category="OperationStopped",
                     exception_type="System.Management.Automation.Runspaces.InvalidRunspaceStateException")
