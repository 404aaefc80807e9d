"""The CLIXML of a CreatePipeline message, written as text: the bytes pypsrp 0.9.1's serializer writes, without it.

pypsrp builds an ElementTree element per property of every command (nine merge settings, the arguments, each one an
object with its own RefId) and then writes the tree out: about a sixth of exbe's CPU per server went into the
messages that start its pipelines (issue 26). Here the same document is written in one pass, with the RefIds and
type-name references numbered as pypsrp numbers them, so the server receives byte for byte what pypsrp would send
(``tests/test_transport_pipeline_xml.py`` compares both over every shape this writer accepts).

It writes only what exbe sends: the defaults pypsrp's ``PowerShell.begin_invoke`` uses for the message, commands of
protocol 2.2 or later with no stream merged, and parameter values that are strings, booleans, integers, None or lists
of strings. Anything else (a ``TaggedValue`` such as a SecureString, a dictionary, a host, another merge) returns
None and goes through pypsrp's serializer, which stays the PSRP implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_ENUM = "<T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN>"
_ARGS_TYPE = ("<T>System.Collections.Generic.List`1[[System.Management.Automation.PSObject, "
              "System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]</T>"
              "<T>System.Object</T></TN>")
_HEAD = (
    '<Obj RefId="0"><MS><B N="NoInput">true</B><Obj RefId="1" N="ApartmentState"><TN RefId="0">'
    "<T>System.Management.Automation.Runspaces.ApartmentState</T>" + _ENUM + "<ToString>UNKNOWN</ToString><I32>2</I32>"
    '</Obj><Obj RefId="2" N="RemoteStreamOptions"><TN RefId="1">'
    "<T>System.Management.Automation.Runspaces.RemoteStreamOptions</T>" + _ENUM
    + '<ToString>AddInvocationInfo</ToString><I32>15</I32></Obj><B N="AddToHistory">false</B>'
    '<Obj RefId="3" N="HostInfo"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B>'
    '<B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>'
    '<Obj RefId="4" N="PowerShell"><MS><B N="IsNested">false</B>')
_TAIL = ('<Nil N="History" /><B N="RedirectShellErrorOutputPipe">false</B></MS></Obj><B N="IsNested">false</B>'
         "</MS></Obj>")
_MERGE_TYPE = "<T>System.Management.Automation.Runspaces.PipelineResultTypes</T>" + _ENUM
_MERGES = ("merge_my_result", "merge_to_result", "merge_previous", "merge_error", "merge_warning", "merge_verbose",
           "merge_debug", "merge_information")
_ARRAY_TYPE = "<T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN>"


def create_pipeline_xml(message: Any, escape: Callable[[str], str | None]) -> bytes | None:
    """The CLIXML (UTF-8) of pypsrp's ``CreatePipeline`` ``message``, or None when this writer does not know its
    shape. ``escape`` is the serializer's own string escaping (``_xHHHH_``), before XML's."""
    pipeline: Any = getattr(message, "pipeline", None)
    if not _default_message(message, pipeline):
        return None
    statements = pipeline._get_statements()
    if not statements or not all(statements) or not all(_known(command) for s in statements for command in s):
        return None
    writer = _Writer(escape)
    parts = [_HEAD]
    if len(statements) > 1:
        ref = writer.ref()
        parts.append(f'<Obj RefId="{ref}" N="ExtraCmds">{writer.args_type()}<LST>')
        for statement in statements:
            parts.append(f'<Obj RefId="{writer.ref()}"><MS>')
            parts.append(writer.commands(statement))
            parts.append("</MS></Obj>")
        parts.append("</LST></Obj>")
    else:
        parts.append('<Nil N="ExtraCmds" />')
    parts.append(writer.commands(statements[0]))
    parts.append(_TAIL)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: ElementTree writes a character reference, pypsrp's path does it
        return None


def _default_message(message: Any, pipeline: Any) -> bool:
    """The message carries what ``begin_invoke`` sets by default, which :data:`_HEAD` and :data:`_TAIL` spell out."""
    host_info = getattr(message, "host_info", None)
    return (type(message).__name__ == "CreatePipeline" and pipeline is not None and message.no_input is True
            and message.add_to_history is False and message.is_nested is False
            and host_info is not None and host_info.host is None
            and getattr(message.apartment_state, "value", None) == 2
            and getattr(message.remote_stream_options, "value", None) == 15
            and pipeline.is_nested is False and pipeline.history is None and pipeline.redirect_err_to_out is False)


def _known(command: Any) -> bool:
    """A command this writer writes as pypsrp would: protocol 2.2+, no stream merged, named parameters of plain
    values."""
    if type(command).__name__ != "Command" or command.use_local_scope is not None:
        return False
    if not isinstance(command.cmd, str) or not isinstance(command.is_script, bool):
        return False
    if _version(command.protocol_version) < (2, 2):
        return False
    if any(getattr(getattr(command, merge), "value", None) != 0 for merge in _MERGES):
        return False
    return all(isinstance(arg.name, str) and _plain(arg.value) for arg in command.args)


def _plain(value: Any) -> bool:
    if type(value) in (str, bool, int) or value is None:
        return True
    return type(value) is list and all(type(item) is str for item in value)


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return (0,)


class _Writer:
    """RefIds and type-name ids in pypsrp's order: each object takes the next RefId as it is written, each type list
    its TN id the first time (a TNRef after)."""

    def __init__(self, escape: Callable[[str], str | None]) -> None:
        self._escape = escape
        self._ref = 4  # 0-4 are in _HEAD
        self._types: dict[str, int] = {}  # TN ids 0 and 1 are in _HEAD

    def ref(self) -> int:
        self._ref += 1
        return self._ref

    def _type(self, key: str, names: str) -> str:
        known = self._types.get(key)
        if known is not None:
            return f'<TNRef RefId="{known}" />'
        self._types[key] = number = len(self._types) + 2
        return f'<TN RefId="{number}">{names}'

    def args_type(self) -> str:
        return self._type("args", _ARGS_TYPE)

    def _merge(self, name: str) -> str:
        return (f'<Obj RefId="{self.ref()}" N="{name}">{self._type("merge", _MERGE_TYPE)}'
                "<ToString>None</ToString><I32>0</I32></Obj>")

    def _string(self, value: str, name: str | None = None) -> str:
        text = self._escape(value) or ""
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        attribute = f' N="{name}"' if name else ""
        return f"<S{attribute}>{text}</S>" if text else f"<S{attribute} />"

    def _value(self, value: Any) -> str:
        if value is None:
            return '<Nil N="V" />'
        if type(value) is bool:
            return f'<B N="V">{"true" if value else "false"}</B>'
        if type(value) is int:
            return f'<I32 N="V">{value}</I32>'
        if type(value) is str:
            return self._string(value, "V")
        ref = self.ref()
        items = "".join(self._string(item) for item in value)
        return (f'<Obj RefId="{ref}" N="V">{self._type("array", _ARRAY_TYPE)}'
                + (f"<LST>{items}</LST></Obj>" if items else "<LST /></Obj>"))

    def commands(self, commands: list[Any]) -> str:
        parts = [f'<Obj RefId="{self.ref()}" N="Cmds">{self.args_type()}<LST>']
        for command in commands:
            parts.append(f'<Obj RefId="{self.ref()}"><MS>{self._string(command.cmd, "Cmd")}'
                         f'<B N="IsScript">{"true" if command.is_script else "false"}</B><Nil N="UseLocalScope" />')
            parts.extend(self._merge(name) for name in ("MergeMyResult", "MergeToResult", "MergePreviousResults"))
            parts.append(f'<Obj RefId="{self.ref()}" N="Args">{self.args_type()}')
            if command.args:
                parts.append("<LST>")
                for arg in command.args:
                    ref = self.ref()
                    parts.append(f'<Obj RefId="{ref}"><MS>{self._string(arg.name, "N")}{self._value(arg.value)}'
                                 "</MS></Obj>")
                parts.append("</LST></Obj>")
            else:
                parts.append("<LST /></Obj>")
            later = ["MergeError", "MergeWarning", "MergeVerbose", "MergeDebug"]
            if _version(command.protocol_version) >= (2, 3):
                later.append("MergeInformation")
            parts.extend(self._merge(name) for name in later)
            parts.append("</MS></Obj>")
        parts.append("</LST></Obj>")
        return "".join(parts)
