"""PSRP runspace pools ("shells") and pipelines ("commands") on top of psrpcore's server state machines.

A :class:`Shell` owns one ``ServerRunspacePool``. psrpcore gives each pool a single outgoing buffer; the shell
drains it after every event and routes payloads by pipeline id into per-command queues, so a Receive for one
command never returns another's output (two pipelines of one pool can run at once). The commands themselves are
executed by an :class:`Executor` (the simulated host) in Python.

Several statements in one pipeline run as PowerShell's *batch* does (``../shared/real-server-shapes.md`` §4). The
facts, from PowerShell's source (``src/System.Management.Automation/engine/hostifaces/PowerShell.cs`` and
``engine/remoting/server/ServerPowerShellDriver.cs``; the 5.x-era engine behaves the same):

* the server builds the pipeline's statements as ``ExtraCommands`` (``SetupAsyncBatchExecution``, from the commands
  marked ``IsEndOfStatement``) and, its runspace pool being local, runs them one by one
  (``BeginBatchInvoke`` -> ``BatchInvocationCallback`` / ``BatchInvocationWorkItem``);
* a statement whose invocation throws (a terminating error) is caught there: ``AppendExceptionToErrorStream`` adds
  its ErrorRecord (the exception's own, else an ``InvalidOperation`` one) to the error stream and the remaining
  statements run, unless the invocation settings' ErrorActionPreference is Stop;
* ``ServerPowerShellDriver.PrepInvoke`` builds those settings without an ErrorActionPreference, and the batch code
  reads a missing one as Continue (``?? ActionPreference.Continue``): on a remoting server the batch goes on;
* so the pipeline ends Completed with the record in the error stream and the failed statement's output missing.

A pipeline of ONE statement is no batch: its terminating error fails the pipeline (state Failed with the record).
A lost runspace (fault ``runspace_lost``) fails the whole pipeline whatever it holds.

SecureStrings (PSRP's session key). psrpcore's ``ServerRunspacePool`` already answers a client's PUBLIC_KEY with
ENCRYPTED_SESSION_KEY (its session key, RSA-encrypted with the client's key) and decrypts ``<SS>`` values with that
key. What a Windows PowerShell 5.1 server does with a SecureString that arrives before any key exchange comes from
PowerShell's source (the 2016 import: ``src/System.Management.Automation/utils/CryptoUtils.cs``,
``PSRemotingCryptoHelperServer.DecryptSecureString`` -> ``RunKeyExchangeIfRequired`` -> ``StartKeyExchange``;
``engine/remoting/server/serverremotesessionstatemachine.cs``): it sends PUBLIC_KEY_REQUEST to the client and waits;
without a PUBLIC_KEY within ``ServerDefaultKeepAliveTimeoutMs`` (4 minutes) the session fails with
``ServerKeyExchangeFailed``, "The client did not respond with a public key within the specified time-out period."
(pypsrp 0.9.1 does not answer that request: its handler returns ``exchange_keys`` without calling it.) The shell
here sends the request and then fails the pipeline with that text at once (neither the 4-minute wait nor the
session's close is modelled).
(PowerShell 7's protocol 2.4 stops encrypting SecureStrings; Exchange's Windows PowerShell 5.1 speaks 2.3.)
A SecureString reaches the model as :class:`SecureText`; a script's positional arguments (``$args``) as
:data:`SCRIPT_ARGUMENTS` while it runs.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import datetime
import functools
import threading
import uuid
from collections import deque
from typing import Any, Protocol

from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore._events import CreatePipelineEvent, PublicKeyEvent
from psrpcore._payload import PSRPPayload, StreamType
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSDateTime,
    PSEnumBase,
    PSFlagBase,
    PSInvocationState,
    PSList,
    PSNoteProperty,
    PSObject,
    PSSecureString,
    PSType,
    RunspacePoolState,
)
from psrpcore.types._enum import PSEnumMeta
from psrpcore.types._serializer import _serialize_string

from . import wsman
from .records import EnumValue, ErrorInfo, Outcome, RunspaceLost, SandboxObject, TerminatingError

#: PowerShell's text when the client sends no public key (remotingerroridstrings.resx, ServerKeyExchangeFailed).
KEY_EXCHANGE_FAILED = "The client did not respond with a public key within the specified time-out period."
#: The positional arguments (``$args``) of the script the executor is running, as the model sees them.
SCRIPT_ARGUMENTS: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("SCRIPT_ARGUMENTS", default=())


@dataclasses.dataclass(frozen=True)
class SecureText:
    """A value that arrived as a SecureString, decrypted with the pool's session key (never printed)."""

    value: str = dataclasses.field(repr=False)


#: Bytes of PSRP fragments per Receive response (WinRM's MaxEnvelopeSize is 500 KiB for protocol 2.2+).
RECEIVE_CHUNK = 256 * 1024


class Executor(Protocol):
    """Runs the statements of one pipeline: each statement is a list of (command text, is_script, parameters);
    ``runspace_id`` is the pool's id (PowerShell's ``RunspaceId``)."""

    def execute(self, configuration: str, statement: list[tuple[str, bool, dict[str, Any]]],
                runspace_id: uuid.UUID) -> Outcome: ...


class DropConnection(Exception):
    """The HTTP layer closes the connection without answering (fault drop_in_step)."""


class Command:
    """One pipeline of a shell: its output queue and whether it has finished."""

    def __init__(self, command_id: str) -> None:
        self.id = command_id
        self.queue: deque[bytes] = deque()
        self.finished = False


class Shell:
    """One runspace pool (WSMan shell) of a sandbox host endpoint."""

    def __init__(self, configuration: str, executor: Executor, ps_version: str = "5.1.17763.1") -> None:
        self.id = str(uuid.uuid4()).upper()
        self.configuration = configuration
        self._executor = executor
        self._pool = ServerRunspacePool(application_private_data={"PSVersionTable": {"PSVersion": ps_version}})
        self._lock = threading.Condition()
        self._pool_queue: deque[bytes] = deque()
        self._commands: dict[str, Command] = {}
        self.closed = False
        self.keys_exchanged = False  # the client sent PUBLIC_KEY and got the session key

    # -- WSMan verbs -------------------------------------------------------------------------------------------------
    def create(self, creation_xml: str) -> None:
        with self._lock:
            self._feed(base64.b64decode(creation_xml), None)

    def command(self, command_id: str, first_fragment: str) -> str:
        command_id = (command_id or str(uuid.uuid4())).upper()
        with self._lock:
            ServerPipeline(self._pool, uuid.UUID(command_id))
            self._commands[command_id] = Command(command_id)
            self._feed(base64.b64decode(first_fragment), uuid.UUID(command_id))
        return command_id

    def send(self, command_id: str | None, data: str) -> None:
        with self._lock:
            if command_id and command_id.upper() not in self._commands:
                raise wsman.Fault(400, 2150858843, f"The command {command_id} was not found in shell {self.id}.",
                                  subcode="w:InvalidSelectors", soap_code="s:Sender")
            self._feed(base64.b64decode(data), uuid.UUID(command_id) if command_id else None)

    def receive(self, command_id: str | None, timeout: float, forced_timeout: bool = False) -> tuple[bytes, str | None]:
        """Long-poll for output: returns (payload, command state URI or None for the pool stream)."""
        key = command_id.upper() if command_id else None
        with self._lock:
            if key is not None and key not in self._commands:
                raise wsman.Fault(400, 2150858843, f"The command {command_id} was not found in shell {self.id}.",
                                  subcode="w:InvalidSelectors", soap_code="s:Sender")
            queue = self._commands[key].queue if key else self._pool_queue
            if forced_timeout:
                self._lock.wait(timeout=min(timeout, 0.2))
                raise wsman.operation_timeout()
            deadline = timeout
            while not queue and not self.closed and not (key and self._commands[key].finished):
                if not self._lock.wait(timeout=deadline):
                    raise wsman.operation_timeout()
            data = b""
            while queue and len(data) < RECEIVE_CHUNK:
                data += queue.popleft()
            state = None
            if key:
                command = self._commands[key]
                state = wsman.COMMAND_DONE if command.finished and not queue else wsman.COMMAND_RUNNING
            return data, state

    def signal(self, command_id: str | None) -> None:
        with self._lock:
            if command_id:
                command = self._commands.pop(command_id.upper(), None)
                if command is not None:
                    pipeline = self._pool.pipeline_table.get(uuid.UUID(command_id))
                    if pipeline is not None and pipeline.state == PSInvocationState.Running:
                        pipeline.stop()
                    self._drain()
            self._lock.notify_all()

    def delete(self) -> None:
        with self._lock:
            self.closed = True
            self._lock.notify_all()

    @property
    def opened(self) -> bool:
        return self._pool.state == RunspacePoolState.Opened

    # -- PSRP plumbing -----------------------------------------------------------------------------------------------
    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        self._pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        while True:
            event = self._pool.next_event()
            if event is None:
                break
            if isinstance(event, PublicKeyEvent):
                self.keys_exchanged = True  # psrpcore queued ENCRYPTED_SESSION_KEY
            if isinstance(event, CreatePipelineEvent):
                self._run_pipeline(self._pool.pipeline_table[event.pipeline_id])
        self._drain()

    def _drain(self) -> None:
        while True:
            payload = self._pool.data_to_send(RECEIVE_CHUNK)
            if payload is None:
                break
            if payload.pipeline_id is None:
                self._pool_queue.append(payload.data)
            else:
                command = self._commands.get(str(payload.pipeline_id).upper())
                if command is not None:
                    command.queue.append(payload.data)
        self._lock.notify_all()

    def _run_pipeline(self, pipeline: ServerPipeline) -> None:
        command = self._commands[str(pipeline.pipeline_id).upper()]
        metadata = pipeline.metadata
        if metadata is None:  # psrpcore sets it from the CreatePipeline message before it hands us the event
            raise RuntimeError(f"pipeline {pipeline.pipeline_id} was created without its PowerShell metadata")
        pipeline.start()
        secure = any(isinstance(value, PSSecureString) for cmd in metadata.commands for _, value in cmd.parameters)
        if secure and not self.keys_exchanged:  # the module docstring: the server asks for the key, in vain
            self._pool.request_key()
            pipeline._change_state(PSInvocationState.Failed, error=_error_record(ErrorInfo(
                KEY_EXCHANGE_FAILED, error_id="ServerKeyExchangeFailed", category="InvalidOperation",
                exception_type="System.Management.Automation.Remoting.PSRemotingDataStructureException")))
            command.finished = True
            self._drain()
            return
        statements: list[list[tuple[str, bool, dict[str, Any]]]] = [[]]
        arguments: tuple[Any, ...] = ()
        for cmd in metadata.commands:
            params = {str(name): _plain(value) for name, value in cmd.parameters if name is not None}
            arguments = tuple(_plain(value) for name, value in cmd.parameters if name is None)
            statements[-1].append((str(cmd.command_text), bool(cmd.is_script), params))
            if cmd.end_of_statement:
                statements.append([])
        statements = [s for s in statements if s]
        batch = len(statements) > 1
        token = SCRIPT_ARGUMENTS.set(arguments)
        try:
            for statement in statements:
                try:
                    outcome = self._executor.execute(self.configuration, statement, self._pool.runspace_pool_id)
                except RunspaceLost:
                    raise
                except TerminatingError as exc:
                    if not batch:
                        raise
                    _write_error(pipeline, exc.info)  # AppendExceptionToErrorStream; the batch goes on
                    continue
                _write(pipeline, outcome)
        except TerminatingError as exc:
            pipeline._change_state(PSInvocationState.Failed, error=_error_record(exc.info))  # no public call (0.3.1)
        else:
            pipeline.complete()
        finally:
            SCRIPT_ARGUMENTS.reset(token)
            command.finished = True
            self._drain()


def _write(pipeline: ServerPipeline, outcome: Outcome) -> None:
    for item in outcome.output:
        pipeline.write_output(to_psobject(item))
    for error in outcome.errors:
        _write_error(pipeline, error)
    for warning in outcome.warnings:
        pipeline.write_warning(warning)


def _write_error(pipeline: ServerPipeline, error: ErrorInfo) -> None:
    pipeline.write_error(_exception(error), _category_info(error), target_object=error.target,
                         fully_qualified_error_id=error.error_id)


def _category_info(info: ErrorInfo) -> ErrorCategoryInfo:
    """CategoryInfo as PowerShell fills it: Reason the exception's type name, TargetName the target, Activity the
    command that wrote the record (empty when no command ran, as for CommandNotFoundException)."""
    return ErrorCategoryInfo(Category=_category(info), Reason=info.exception_type.rpartition(".")[2],
                             TargetName=info.target or "", Activity=info.activity or "")


def to_psobject(value: Any, sent: dict[int, PSObject] | None = None) -> Any:
    """A record value as psrpcore serializes it. ``sent`` maps SandboxObjects already converted within one output
    object, so that one used twice becomes one PSObject, which psrpcore sends once and then as a ``<Ref>``."""
    sent = {} if sent is None else sent
    if isinstance(value, SandboxObject):
        if id(value) in sent:
            return sent[id(value)]
        obj = PSList([to_psobject(v, sent) for v in value.items]) if value.items is not None else PSObject()
        sent[id(value)] = obj
        meta = obj.PSObject
        meta.type_names = list(value.type_names)
        meta.adapted_properties.extend(PSNoteProperty(k, to_psobject(v, sent)) for k, v in value.adapted.items())
        meta.extended_properties.extend(PSNoteProperty(k, to_psobject(v, sent)) for k, v in value.members.items())
        if value.to_string:
            # psrpcore 0.3.1 writes <ToString> unescaped, so a CR would reach the client as a bare LF; PowerShell
            # escapes it (_x000D__x000A_ in the captures), which is what clients decode
            meta.to_string = _serialize_string(value.to_string)
        return obj
    if isinstance(value, EnumValue):
        return _enum_type(value.type_name, value.members, value.flags)(value.value)
    if isinstance(value, datetime.datetime):
        return PSDateTime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                          value.microsecond, tzinfo=value.tzinfo)
    if isinstance(value, (list, tuple)):
        return [to_psobject(v, sent) for v in value]
    return value


@functools.cache
def _enum_type(type_name: str, members: tuple[tuple[str, int], ...], flags: bool) -> type:
    """A psrpcore enum class for a .NET enum (serialized as ``<Obj>`` with its type names, ToString and I32)."""
    base = PSFlagBase if flags else PSEnumBase
    namespace: Any = PSEnumMeta.__prepare__(type_name, (base,))  # enum's own class namespace
    for name, number in members:
        namespace[name] = number
    enum_class: Any = PSEnumMeta(type_name.rpartition(".")[2], (base,), namespace)
    return PSType([type_name], rehydrate=False)(enum_class)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """psrpcore primitive wrappers -> plain Python values for the model."""
    if isinstance(value, PSSecureString):
        return SecureText(value.decrypt())
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _exception(info: ErrorInfo) -> NETException:
    exc = NETException(Message=info.message)
    exc.PSObject.type_names = [info.exception_type, "System.Exception", "System.Object"]
    return exc


def _category(info: ErrorInfo) -> ErrorCategory:
    return getattr(ErrorCategory, info.category, ErrorCategory.NotSpecified)


def _error_record(info: ErrorInfo) -> ErrorRecord:
    return ErrorRecord(
        Exception=_exception(info),
        CategoryInfo=_category_info(info),
        FullyQualifiedErrorId=info.error_id,
        TargetObject=info.target,
    )

