"""One conversation per server: a pypsrp runspace pool per endpoint, opened once, used by every step, closed at the end.

This is the only module that imports pypsrp. It knows two doors:

* ``winrm`` — WinRM's ``/wsman``, configuration ``Microsoft.PowerShell``: exbe's rendered step scripts run here;
* ``exchange`` — Exchange's ``/PowerShell``, configuration ``Microsoft.Exchange``: cmdlets only (no-language mode).

pypsrp, requests and spnego exceptions become :class:`~exbe.errors.ConnectionFailed` with a kind and a hint, once,
here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConnectionFailed

if TYPE_CHECKING:
    from .config import Credentials, Server

log = logging.getLogger("exbe.transport")

ENDPOINTS = {"winrm": "Microsoft.PowerShell", "exchange": "Microsoft.Exchange"}

#: One command of a pipeline: cmdlet name and parameters.
Command = tuple[str, dict[str, Any]]


@dataclasses.dataclass
class PipelineOutput:
    """What one pipeline returned: output objects, error-stream messages, and the terminating error if it failed."""

    output: list[Any]
    errors: list[str]
    warnings: list[str]
    failed: str | None  # message of the terminating error, None when the pipeline completed


def preload() -> None:
    """Import pypsrp before the fleet's threads start: concurrent first imports serialise on the import lock."""
    import pypsrp.powershell  # noqa: F401
    import pypsrp.wsman  # noqa: F401
    import requests  # noqa: F401


class Session:
    """The runspace pools of one server, opened on first use. Thread-safe per endpoint."""

    def __init__(self, server: Server, credentials: Credentials) -> None:
        self.server = server
        self._credentials = credentials
        self._pools: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in ENDPOINTS}

    # -- public ------------------------------------------------------------------------------------------------------
    def run_scripts(self, scripts: list[str]) -> PipelineOutput:
        """Run scripts on the WinRM endpoint as statements of ONE pipeline: one round trip for all of them."""
        def build(ps: Any) -> None:
            for i, script in enumerate(scripts):
                if i:
                    ps.add_statement()
                ps.add_script(script)
        return self._invoke("winrm", build)

    def run_cmdlets(self, statements: list[list[Command]]) -> PipelineOutput:
        """Run Exchange cmdlets on the Exchange endpoint: each statement a pipeline of commands (``a | b``), all
        statements in ONE PSRP pipeline (one round trip)."""
        def build(ps: Any) -> None:
            for i, commands in enumerate(statements):
                if i:
                    ps.add_statement()
                for name, params in commands:
                    ps.add_cmdlet(name)
                    for key, value in params.items():
                        ps.add_parameter(key, value)
        return self._invoke("exchange", build)

    def discard(self, endpoint: str) -> None:
        """Forget an endpoint's pool without closing it: ``iisreset`` ends every pool of the Exchange endpoint (an IIS
        application), so the next use opens a new one (authentication + Create + Receive) instead of failing."""
        with self._locks[endpoint]:
            pool = self._pools.pop(endpoint, None)
        if pool is not None:
            _close_connection(pool)

    def close(self) -> None:
        """Close every open pool (one Delete each, the endpoints at once); errors are logged, not raised."""
        def close_one(name: str, pool: Any) -> None:
            try:
                pool.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the step result
                log.debug("%s: closing the %s pool failed: %s", self.server.name, name, exc)
            finally:
                _close_connection(pool)

        others = [threading.Thread(target=close_one, args=item) for item in list(self._pools.items())[1:]]
        for thread in others:
            thread.start()
        for item in list(self._pools.items())[:1]:
            close_one(*item)
        for thread in others:
            thread.join()
        self._pools.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------------------
    def _invoke(self, endpoint: str, build: Callable[[Any], None]) -> PipelineOutput:
        from pypsrp.powershell import PowerShell

        with self._locks[endpoint], _translate_errors(self.server, endpoint):
            pool = self._pool(endpoint)
            ps = PowerShell(pool)
            build(ps)
            output = ps.invoke()
            errors = [_error_text(e) for e in ps.streams.error]
            warnings = [str(w) for w in ps.streams.warning]
            failed = None
            if ps.had_errors:
                failed = errors[-1] if errors else "the pipeline failed with a terminating error"
                errors = errors[:-1] if errors else errors
            return PipelineOutput(list(output), errors, warnings, failed)

    def _pool(self, endpoint: str) -> Any:
        pool = self._pools.get(endpoint)
        if pool is None:
            from pypsrp.powershell import RunspacePool

            wsman = self._wsman(endpoint)
            _require_encrypted_answers(wsman)
            pool = RunspacePool(wsman, configuration_name=ENDPOINTS[endpoint])
            pool.open()
            self._pools[endpoint] = pool
        return pool

    def _wsman(self, endpoint: str) -> Any:
        from pypsrp.wsman import WSMan

        s = self.server
        exchange = endpoint == "exchange"
        password = self._credentials.password.reveal() if self._credentials.password is not None else None
        return WSMan(
            s.exchange_host if exchange else s.host,
            port=s.exchange_port if exchange else s.port,
            path=s.exchange_path if exchange else "wsman",
            ssl=s.exchange_ssl if exchange else s.ssl,
            auth=s.auth,
            username=self._credentials.username,
            password=password,
            cert_validation=s.verify,  # type: ignore[arg-type]  # pypsrp takes a CA bundle path too (requests' verify)
            connection_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            operation_timeout=s.operation_timeout,
        )


class UnencryptedResponse(Exception):
    """A server answered in plaintext on a connection whose messages must be encrypted (NTLM/Kerberos over HTTP)."""


def _require_encrypted_answers(wsman: Any) -> None:
    """With message encryption on (NTLM/Kerberos over HTTP), refuse every successful answer that is not encrypted:
    pypsrp 0.9.1 accepts a plaintext body silently, so someone on the path could forge results. Answers before
    authentication completes (401) and http.sys's own errors (503, 404) carry no WinRM message and pass through."""
    transport = wsman.transport
    if not getattr(transport, "wrap_required", False):
        return
    build = transport._build_session

    def build_checked() -> Any:
        session = build()

        def check(response: Any, *args: Any, **kwargs: Any) -> Any:
            content_type = response.headers.get("content-type", "")
            if response.status_code == 200 and response.content and not content_type.startswith(
                    ("multipart/encrypted;", "multipart/x-multi-encrypted;")):
                raise UnencryptedResponse(f"HTTP 200 with content type {content_type or '(none)'}")
            return response

        session.hooks["response"].append(check)
        return session

    transport._build_session = build_checked


def _close_connection(pool: Any) -> None:
    """Close the pool's HTTP connections (requests keeps them alive otherwise, and the server holds a thread for
    each until its idle timeout)."""
    try:
        pool.connection.close()
    except Exception as exc:  # noqa: BLE001 - best effort at the end of a run
        log.debug("closing the HTTP connections failed: %s", exc)


@contextlib.contextmanager
def _translate_errors(server: Server, endpoint: str) -> Iterator[None]:
    """Any transport exception -> ConnectionFailed with a kind and a hint, naming the endpoint."""
    try:
        yield
    except ConnectionFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - classify() decides; anything else propagates unchanged
        mapped = classify(exc)
        if mapped is None:
            raise
        kind, detail = mapped
        exchange = endpoint == "exchange"
        raise ConnectionFailed(
            server=server.name,
            host=server.exchange_host if exchange else server.host,
            port=server.exchange_port if exchange else server.port,
            kind=kind,
            detail=_endpoint_detail(endpoint, detail),
        ) from None


def classify(exc: BaseException) -> tuple[str, str] | None:
    """Map a pypsrp/requests/spnego exception to (kind, detail); None for exceptions that are not transport errors."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    for cause in _chain(exc):
        text = str(cause)
        if isinstance(cause, AuthenticationError):
            return "auth", ""
        if isinstance(cause, UnencryptedResponse):
            return "unencrypted", text
        if "no username or password was specified" in text.lower():  # spnego, before any request was sent
            return "no_credentials", ""
        if isinstance(cause, requests.exceptions.SSLError):
            return "tls_validation", _first_line(text)
        if isinstance(cause, (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout)):
            return "timeout", ""
        if isinstance(cause, requests.exceptions.ConnectionError):
            lowered = text.lower()
            if any(words in lowered for words in ("name or service not known", "nodename nor servname",
                                                  "getaddrinfo", "name resolution")):
                return "name_not_resolved", ""
            if "remotedisconnected" in lowered or "connection aborted" in lowered or "reset by peer" in lowered:
                return "dropped", ""
            return "unreachable", ""
        if isinstance(cause, WSManFaultError):
            if cause.code == 2150858793:
                return "timeout", "WSMan operation timeout"
            return "protocol", _first_line(f"WSMan fault {cause.code}: {cause.reason}")
        if isinstance(cause, WinRMTransportError):
            if cause.code in (404, 405):
                return "winrm_not_enabled", f"HTTP {cause.code}"
            if cause.code == 503:
                return "unavailable", "HTTP 503"
            return "protocol", f"HTTP {cause.code}"
    if type(exc).__module__.startswith(("spnego", "pypsrp", "requests", "urllib3")):
        return "protocol", _first_line(str(exc))
    return None


def _endpoint_detail(endpoint: str, detail: str) -> str:
    where = "the Exchange endpoint (/PowerShell)" if endpoint == "exchange" else "WinRM"
    return f"{where}: {detail}" if detail else where


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, BaseException):
            yield arg


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _error_text(record: Any) -> str:
    """An ErrorRecord as PowerShell shows it: the error details' message, else the exception's message (what the
    record's ToString is). pypsrp's ``message`` is the category line ("ObjectNotFound (:) [], ...") instead."""
    exception = getattr(record, "exception", None)
    props = {**(getattr(exception, "adapted_properties", None) or {}),
             **(getattr(exception, "extended_properties", None) or {})}
    for text in (getattr(record, "details_message", None), props.get("Message"), str(record),
                 getattr(record, "message", None)):
        if text and str(text) != "None":
            return _first_line(str(text)) or "unknown error"
    return "unknown error"
