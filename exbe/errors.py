"""exbe's errors: each one a single line that says what is wrong and what to do.

Every error carries its fields (server, check, kind...) so reports can use them, and an ``exit_code``:
2 for usage and configuration errors (nothing was attempted), 1 for failures while running.
``str()`` passes through the process-wide redactor, so a password that slipped into a message never reaches
a console, a log or a report.
"""

from __future__ import annotations

from collections.abc import Iterable

from exbe.redaction import REDACTOR

EXIT_FAILED = 1
EXIT_USAGE = 2


class ExbeError(Exception):
    """Root of exbe's errors; ``str(err)`` is one line, safe to print."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return REDACTOR.redact(" ".join(self.message.split()))


class ConfigError(ExbeError):
    """The configuration, inventory, environment or command line is wrong; nothing was attempted."""

    exit_code = EXIT_USAGE


class UnknownServerError(ConfigError):
    """A ``--server`` value matches no inventory name or host name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(known)
        if self.known:
            message = f"unknown server {name!r}; known: {', '.join(self.known)} (inventory in exbe.yaml)"
        else:
            message = f"unknown server {name!r}; the inventory is empty (add servers under exbe.inventory in exbe.yaml)"
        super().__init__(message)


#: What each connection failure kind means, and what to do about it by default.
CONNECTION_KINDS: dict[str, tuple[str, str]] = {
    "unreachable": (
        "cannot connect",
        "check that the server is up and that the WinRM port is open from this agent (firewall, listener)",
    ),
    "name_not_resolved": (
        "the host name does not resolve",
        "check the host name in the inventory, or DNS as seen from this agent",
    ),
    "tls_validation": (
        "TLS certificate validation failed",
        "set ca_file on the server's inventory entry to the CA that issued the listener's certificate",
    ),
    "unencrypted": (
        "the server answered without message encryption",
        "someone on the path may be forging answers: nothing from this server is trusted; use HTTPS, and check that "
        "the WinRM listener keeps AllowUnencrypted false",
    ),
    "no_credentials": (
        "no credentials to log on with",
        "set EXBE_USERNAME and EXBE_PASSWORD, or run on a domain-joined agent whose Kerberos logon the server accepts",
    ),
    "auth": (
        "authentication failed",
        "check EXBE_USERNAME/EXBE_PASSWORD or the agent's logon; the account needs WinRM rights on the server",
    ),
    "winrm_not_enabled": (
        "no WinRM listener answered",
        "run 'Enable-PSRemoting' (or 'winrm quickconfig') on the server, or fix port/ssl in the inventory",
    ),
    "timeout": (
        "the server did not answer in time",
        "check the server's load, or raise the setting named above (per server in the inventory, or exbe.defaults)",
    ),
    "dropped": (
        "the server closed the connection",
        "check the WinRM listener and any proxy or load balancer between this agent and the server",
    ),
    "unavailable": (
        "the endpoint answered 503 Service Unavailable",
        "check that W3SVC/WinRM (and, for the Exchange endpoint, the MSExchange PowerShell app pool) are running",
    ),
    "server_error": (
        "the endpoint answered HTTP 500 with a WSMan fault",
        "the WinRM service on the server failed the request (its event log Microsoft-Windows-WinRM/Operational says "
        "why); run exbe again, and check the server's WinRM service if it persists",
    ),
    "protocol": (
        "the endpoint did not speak WinRM/PSRP as expected",
        "check that host, port and exchange_path point at a WinRM or Exchange PowerShell endpoint",
    ),
}


class ConnectionFailed(ExbeError):
    """exbe could not open a session to a server; ``kind`` is one of :data:`CONNECTION_KINDS`."""

    def __init__(
        self, server: str, host: str, port: int, kind: str, hint: str | None = None, detail: str | None = None
    ) -> None:
        if kind not in CONNECTION_KINDS:
            raise ValueError(f"unknown connection failure kind {kind!r}; expected one of {sorted(CONNECTION_KINDS)}")
        what, default_hint = CONNECTION_KINDS[kind]
        self.server = server
        self.host = host
        self.port = port
        self.kind = kind
        self.hint = hint or default_hint
        self.detail = detail
        because = f" ({detail})" if detail else ""
        super().__init__(f"{server} ({host}:{port}): {what}{because}; {self.hint}")


class PreflightError(ExbeError):
    """A preflight check found the server in a state where exbe must not go on."""

    def __init__(self, server: str, check: str, found: str, expected: str) -> None:
        self.server = server
        self.check = check
        self.found = found
        self.expected = expected
        super().__init__(f"{server}: preflight {check}: found {found}; expected {expected}")


class StepFailed(ExbeError):
    """A step ran and failed on a server."""

    def __init__(self, server: str, step: str, message: str) -> None:
        self.server = server
        self.step = step
        self.detail = message
        super().__init__(f"{server}: {step} failed: {message}")
