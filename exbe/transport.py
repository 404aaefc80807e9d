# Over 500 lines because it is the one door to pypsrp: both endpoints, their errors classified once, retries.
"""One conversation per server: a pypsrp runspace pool per endpoint, opened once, used by every step, closed at the end.

The steps and jobs reach pypsrp only through this module; beneath it, the wire's own modules adapt pypsrp:
:mod:`exbe.http_transport` (the HTTP), :mod:`exbe.wsman_envelope` and :mod:`exbe.wsman_pipeline` (requests written
as text), :mod:`exbe.psrp_serializer` (values), :mod:`exbe.wsman_connection`. It knows two doors:

* ``winrm`` — WinRM's ``/wsman``, configuration ``Microsoft.PowerShell``: exbe's rendered step scripts run here;
* ``exchange`` — Exchange's ``/PowerShell``, configuration ``Microsoft.Exchange``: cmdlets only (no-language mode).

pypsrp, requests and spnego exceptions become :class:`~exbe.errors.ConnectionFailed` with a kind and a hint, once,
here.

A request lost to a dropped connection is sent once more, after :data:`RETRY_DELAY_S`, when repeating it cannot change
the server: opening a pool (Create), reading output (Receive), closing (Delete), and a whole pipeline that only reads
(``repeatable``). A pipeline that changes something is never sent twice: its caller re-reads the server instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any

from .batch import Event, ServerError
from .beside import beside
from .contract import READ_ONLY_CMDLETS
from .deadline import bound_requests
from .errors import ConfigError, ConnectionFailed
from .http_transport import ENCRYPTED_TYPES, HttpTransport, UnencryptedResponse, environment_proxy, usable
from .psrp_messages import fast_fragmenter
from .psrp_serializer import fast_serializer
from .wsman_connection import RedirectRefused, new_wsman, refuse_redirect, register_namespaces_once

if TYPE_CHECKING:
    from .config import Credentials, Server

log = logging.getLogger("exbe.transport")

ENDPOINTS = {"winrm": "Microsoft.PowerShell", "exchange": "Microsoft.Exchange"}

#: One command of a pipeline: cmdlet name and parameters.
Command = tuple[str, dict[str, Any]]

#: Seconds before the one retry of a request lost to a dropped connection (a WAN blip, a reset keep-alive).
RETRY_DELAY_S = 0.5


@dataclasses.dataclass
class PipelineOutput:
    """What one pipeline returned: output objects, error-stream messages, and the terminating error if it failed.

    ``events`` is the output and error streams in arrival order (what :func:`exbe.batch.read` needs to tell each
    statement's answer). A pipeline of several statements runs as PowerShell's batch and ends Completed when a
    statement fails (exbe.batch), so ``failed`` is set only by a single statement's terminating error or a lost
    runspace; its record is the last of ``events`` too."""

    output: list[Any]
    errors: list[str]
    warnings: list[str]
    failed: str | None  # message of the terminating error, None when the pipeline completed
    events: list[Event] = dataclasses.field(default_factory=list)
    #: each error's category reason (the exception's type name, e.g. ``InvalidOperationException``), as ``errors``
    #: and then ``failed`` list them; "" where the record names none
    reasons: list[str] = dataclasses.field(default_factory=list)


def preload() -> None:
    """Import pypsrp before the fleet's threads start: concurrent first imports serialise on the import lock."""
    from .lean_imports import import_without_metadata

    import_without_metadata("requests")
    import pypsrp.powershell  # noqa: F401
    import pypsrp.wsman  # noqa: F401
    import requests  # noqa: F401

    register_namespaces_once()


class Session:
    """The runspace pools of one server, opened on first use. Thread-safe per endpoint."""

    def __init__(self, server: Server, credentials: Credentials) -> None:
        self.server = server
        self._credentials = credentials
        self._pools: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in ENDPOINTS}

    # -- public ------------------------------------------------------------------------------------------------------
    def run_scripts(self, scripts: list[str], *, repeatable: bool = False,
                    arguments: tuple[Any, ...] = ()) -> PipelineOutput:
        """Run scripts on the WinRM endpoint as statements of ONE pipeline: one round trip for all of them.
        ``repeatable``: the scripts only read, so the pipeline is run again if its Command is lost. ``arguments``:
        positional arguments of the last script (``$args``); a :class:`~exbe.redaction.Secret` travels as a
        SecureString (:func:`_secure_values`)."""
        def build(ps: Any) -> None:
            for i, script in enumerate(scripts):
                if i:
                    ps.add_statement()
                ps.add_script(script)
            for value in arguments:
                ps.add_argument(value)
        return self._invoke("winrm", build, repeatable=repeatable, secure=_has_secret(arguments))

    def open(self, endpoint: str) -> None:
        """Open the endpoint's pool now, if it is not open (authentication and Create): a logon decided on its own."""
        with self._locks[endpoint], _translate_errors(self.server, endpoint):
            self._pool(endpoint)

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
        reads = all(name in READ_ONLY_CMDLETS for commands in statements for name, _ in commands)
        secure = _has_secret(v for commands in statements for _, params in commands for v in params.values())
        return self._invoke("exchange", build, repeatable=reads, secure=secure)

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

        pools = list(self._pools.items())
        others = [beside(close_one, *item) for item in pools[1:]]
        for item in pools[:1]:
            close_one(*item)
        wait(others)
        self._pools.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------------------
    def _invoke(self, endpoint: str, build: Callable[[Any], None], *, repeatable: bool,
                secure: bool = False) -> PipelineOutput:
        with self._locks[endpoint], _translate_errors(self.server, endpoint):
            pool = self._pool(endpoint)
            if secure:
                pool.exchange_keys()  # PSRP's session key (2 requests, once per pool): SecureStrings need it
                build = _secure_values(build)
            try:
                ps = self._run(pool, build)
            except Exception as exc:
                if not repeatable or isinstance(exc, LostAgain) or not _dropped(exc):
                    raise
                log.info("%s: the connection to %s dropped; running the read-only pipeline once more",
                         self.server.name, endpoint)
                _new_connection(pool.connection)
                ps = self._run(pool, build)
            output = ps.output
            errors = [_error_text(e) for e in ps.streams.error]
            reasons = [str(getattr(e, "reason", None) or "") for e in ps.streams.error]
            warnings = [str(w) for w in ps.streams.warning]
            events: list[Event] = [(kind, server_error(item) if kind == "error" else item)
                                   for kind, item in ps.events]
            failed = None
            if ps.had_errors:
                failed = errors[-1] if errors else "the pipeline failed with a terminating error"
                errors = errors[:-1] if errors else errors
                if not ps.streams.error:  # a Failed state without its record: the failure is still an event
                    events.append(("error", ServerError(failed)))
            return PipelineOutput(list(output), errors, warnings, failed, events, reasons)

    @staticmethod
    def _run(pool: Any, build: Callable[[Any], None]) -> Any:
        ps = _shared_powershell()(pool)
        try:
            build(ps)
            ps.invoke()
        finally:
            # pypsrp registers every pipeline in its pool (``pool.pipelines``, and ``ps.runspace_pool`` back: a cycle)
            # and forgets it only in the pipeline's ``close``, which sends a Terminate exbe does not send; kept there,
            # each pipeline with its output and records lives on until a full collection, in a fleet run long after
            # its server (about 900 objects per server). A pipeline is run once, so it is forgotten when it ends.
            pool.pipelines.pop(ps.id, None)
        return ps

    def _pool(self, endpoint: str) -> Any:
        pool = self._pools.get(endpoint)
        if pool is None:
            from pypsrp.powershell import RunspacePool

            wsman = self._wsman(endpoint)
            proxy = environment_proxy(wsman.transport.endpoint)
            if usable(self.server, proxy):
                wsman.transport = HttpTransport(wsman.transport, server=self.server, endpoint_name=endpoint,
                                                proxy=proxy)
            else:  # CredSSP, or a proxy reached over TLS or SOCKS: pypsrp's requests transport, guarded alike
                _tune_session(wsman)
                bound_requests(wsman, self.server, endpoint)  # the server's deadline (exbe.deadline)
            _retry_safe_requests(wsman, self.server.name, endpoint)
            pool = RunspacePool(wsman, configuration_name=ENDPOINTS[endpoint])
            pool._serializer = pool._fragmenter.serializer = fast_serializer()
            pool._fragmenter.__class__ = fast_fragmenter()
            pool.open()
            self._pools[endpoint] = pool
        return pool

    def _wsman(self, endpoint: str) -> Any:
        s = self.server
        exchange = endpoint == "exchange"
        password = self._credentials.password.reveal() if self._credentials.password is not None else None
        return new_wsman(
            s.exchange_host if exchange else s.host,
            port=s.exchange_port if exchange else s.port,
            path=s.exchange_path if exchange else "wsman",
            ssl=s.exchange_ssl if exchange else s.ssl,
            auth=s.auth,
            username=self._credentials.username,
            password=password,
            cert_validation=s.verify,  # pypsrp takes a CA bundle path too (requests' verify)
            connection_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            operation_timeout=s.operation_timeout,
        )


def _has_secret(values: Iterable[Any]) -> bool:
    from .redaction import Secret

    return any(isinstance(value, Secret) for value in values)


def _secure_values(build: Callable[[Any], None]) -> Callable[[Any], None]:
    """``build`` with every :class:`~exbe.redaction.Secret` parameter or argument sent as a SecureString
    (``TaggedValue("SS")``: pypsrp encrypts it with the pool's session key), revealed only here, at the send."""
    from pypsrp.serializer import TaggedValue

    from .redaction import Secret

    def reveal(value: Any) -> Any:
        return TaggedValue("SS", value.reveal()) if isinstance(value, Secret) else value

    def secured(ps: Any) -> None:
        add_parameter, add_argument = ps.add_parameter, ps.add_argument
        ps.add_parameter = lambda name, value=None: add_parameter(name, reveal(value))
        ps.add_argument = lambda value: add_argument(reveal(value))
        build(ps)
    return secured


def check_auth_available(servers: Iterable[Server]) -> None:
    """Refuse, before any server is contacted, servers whose ``auth: credssp`` cannot work here: CredSSP needs
    requests-credssp, an optional dependency of pypsrp that ends the first request in an ImportError without it.
    CredSSP is used only where it is configured (``auth: credssp``); pypsrp never picks it itself."""
    users = [server.name for server in servers if server.auth == "credssp"]
    if not users:
        return
    try:
        importlib.import_module("requests_credssp")
    except ImportError:
        raise ConfigError(f"server {users[0]!r} uses auth: credssp, which needs the requests-credssp package, and it "
                          "is not installed: `pip install 'pypsrp[credssp]'` on this agent, or choose another auth "
                          "(negotiate)") from None


class LostAgain(Exception):
    """The one retry of a request was lost to a dropped connection too: nothing sends it a third time (the read
    pipeline around it is not run again either). Classified "dropped", like the loss it follows."""


def _tune_session(wsman: Any) -> None:
    """Adjust the requests session pypsrp builds for an endpoint where pypsrp's transport carries it
    (:func:`~exbe.http_transport.usable`), on its first request, once:

    * the environment's proxy settings (``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``) and CA bundle were resolved for
      this endpoint when pypsrp built the session, so requests stops looking them up again on every request
      (``trust_env`` off; the resolved proxy stays in ``session.proxies``);
    * with message encryption on (NTLM/Kerberos over HTTP), every successful answer that is not encrypted is refused:
      pypsrp 0.9.1 accepts a plaintext body silently, so someone on the path could forge results. Answers before
      authentication completes (401) and http.sys's own errors (503, 404) carry no WinRM message and pass through;
    * a redirect is never followed (:func:`~exbe.wsman_connection.refuse_redirect`)."""
    transport = wsman.transport
    build = transport._build_session
    encrypted = bool(getattr(transport, "wrap_required", False))

    def build_tuned() -> Any:
        session = build()
        session.trust_env = False
        session.hooks["response"].append(refuse_redirect)
        if encrypted:
            session.hooks["response"].append(_refuse_plaintext)
        return session

    transport._build_session = build_tuned


def _refuse_plaintext(response: Any, *args: Any, **kwargs: Any) -> Any:
    content_type = response.headers.get("content-type", "")
    if response.status_code == 200 and response.content and not content_type.startswith(ENCRYPTED_TYPES):
        raise UnencryptedResponse(f"HTTP 200 with content type {content_type or '(none)'}")
    return response


def _retry_safe_requests(wsman: Any, server: str, endpoint: str) -> None:
    """Send a Create, Receive or Delete lost to a dropped connection once more, on a new connection. Repeating them
    changes nothing on the server: a lost Create at worst leaves an idle shell that WinRM ends at its idle timeout,
    a Receive asks for the same output again (pypsrp's own reasoning for retrying it on read timeouts, wsman.py;
    a Receive answered with HTTP 500 and a WSMan fault other than the operation timeout is sent once more too),
    a Delete of a shell already deleted is only refused. Command and Send start work and are never repeated here."""
    from pypsrp.wsman import WSManAction

    repeatable = {WSManAction.CREATE, WSManAction.RECEIVE, WSManAction.DELETE}
    invoke = wsman.invoke

    def invoke_once_more(action: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return invoke(action, *args, **kwargs)
        except Exception as exc:
            failed_500 = action == WSManAction.RECEIVE and _internal_error(exc)
            if action not in repeatable or not (_dropped(exc) or failed_500):
                raise
            log.info("%s: %s during %s; sending it once more", server,
                     f"{endpoint} answered HTTP 500" if failed_500 else f"the connection to {endpoint} dropped",
                     action.rsplit("/", 1)[-1])
            _new_connection(wsman)
            try:
                return invoke(action, *args, **kwargs)
            except Exception as again:
                if _dropped(again):
                    raise LostAgain(f"{action.rsplit('/', 1)[-1]} lost twice") from again
                raise

    wsman.invoke = invoke_once_more


def _internal_error(exc: BaseException) -> bool:
    """The server answered HTTP 500 with a WSMan fault that is not the operation timeout (pypsrp polls on that)."""
    mapped = classify(exc)
    return mapped is not None and mapped[0] == "server_error"


def _dropped(exc: BaseException) -> bool:
    """The request was lost to a connection the other side closed or reset (not refused, not timed out)."""
    mapped = classify(exc)
    return mapped is not None and mapped[0] == "dropped"


def _new_connection(wsman: Any) -> None:
    """After a drop, after :data:`RETRY_DELAY_S`: the next request goes out on a new connection. With message
    encryption the security context died with the old one (NTLM and Kerberos over HTTP are per connection), so
    pypsrp authenticates again first (it does the same after a read timeout)."""
    time.sleep(RETRY_DELAY_S)
    wsman.transport.close()  # a kept-alive connection is not reused: the retry gets a new one
    wsman.transport.encryption = None


@functools.cache
def _shared_powershell() -> Any:
    """pypsrp's PowerShell, sharing the commands between a pipeline's statements (pypsrp is imported on first use).

    pypsrp 0.9.1 deep-copies every command each time it serializes a pipeline (twice per invoke: ``Cmds`` and
    ``ExtraCmds``), so that lxml would not move an element between parents; it serializes with the standard
    library's ElementTree, which builds new elements from the command objects every time, so the copy only costs
    (8-10% of a fleet run's CPU, issue 16)."""
    from pypsrp.complex_objects import Pipeline
    from pypsrp.exceptions import WSManFaultError
    from pypsrp.messages import MessageType
    from pypsrp.powershell import PowerShell

    class SharedStatements(Pipeline):
        def _get_statements(self) -> list[list[Any]]:
            commands = list(self.commands or [])
            commands[-1].end_of_statement = True
            statements: list[list[Any]] = [[]]
            for command in commands:
                statements[-1].append(command)
                if command.end_of_statement:
                    statements.append([])
            return statements[:-1]

    class SharedPowerShell(PowerShell):
        """... that also keeps its output and error records in arrival order (``events``): pypsrp keeps them in
        two lists, and which statement of a batch wrote a record is read from where it arrived (exbe.batch)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.events: list[tuple[str, Any]] = []

        def _invoke(self, msg: Any) -> None:
            given = msg.pipeline
            msg.pipeline = SharedStatements(is_nested=given.is_nested, cmds=given.commands, history=given.history,
                                            redirect_err_to_out=given.redirect_err_to_out)
            super()._invoke(msg)

        # pypsrp's _parse_responses keeps each handler's return value in message order: these return the record
        def _process_error_record(self, message: Any) -> Any:
            super()._process_error_record(message)
            return ("error", message.data)

        def _process_pipeline_state(self, message: Any) -> Any:
            super()._process_pipeline_state(message)
            record = message.data.error_record
            return ("error", record) if record is not None else None

        def poll_invoke(self, timeout: int | None = None) -> None:
            """pypsrp 0.9.1's poll_invoke, recording ``events`` as the messages come."""
            try:
                responses = self.runspace_pool._receive(self.id, timeout=timeout)
            except WSManFaultError as err:
                if err.code != 2150858793:  # the operation timeout: poll again
                    raise
                responses = []
            for message_type, value in responses:
                if message_type == MessageType.PIPELINE_OUTPUT:
                    self.output.append(value.data.data)
                    self.events.append(("output", value.data.data))
                elif message_type in (MessageType.ERROR_RECORD, MessageType.PIPELINE_STATE) and value is not None:
                    self.events.append(value)

    return SharedPowerShell


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
        if isinstance(cause, RedirectRefused):
            return "protocol", text
        if "no username or password was specified" in text.lower():  # spnego, before any request was sent
            return "no_credentials", ""
        if isinstance(cause, requests.exceptions.SSLError):
            return "tls_validation", _first_line(text)
        if isinstance(cause, requests.exceptions.ConnectTimeout):
            return "timeout", "no connection within connect_timeout (exbe.defaults.connect_timeout)"
        if isinstance(cause, requests.exceptions.ReadTimeout):
            return "timeout", "no answer within read_timeout (exbe.defaults.read_timeout)"
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
                return "timeout", "WSMan operation timeout (exbe.defaults.operation_timeout)"
            return "server_error", _first_line(f"WSMan fault {cause.code}: {cause.reason}")
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


def server_error(record: Any) -> ServerError:
    """A pypsrp ErrorRecord as exbe.batch reads it: its text and what names the command that wrote it."""
    def text(value: Any) -> str:
        return "" if value is None or str(value) == "None" else str(value)
    exception_types = [str(t) for t in getattr(getattr(record, "exception", None), "types", None) or []]
    return ServerError(
        text=_error_text(record),
        error_id=text(getattr(record, "fq_error", None)),
        reason=text(getattr(record, "reason", None)) or (exception_types[0].rpartition(".")[2]
                                                         if exception_types else ""),
        target=text(getattr(record, "target_name", None)),
        command=text(getattr(record, "invocation_name", None)) or text(getattr(record, "activity", None)))


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
