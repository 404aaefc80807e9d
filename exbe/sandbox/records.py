"""What the simulated PowerShell side hands back to the protocol layer: objects, errors, terminating errors.

The domain model (``steps``, ``exchange``) speaks only these types; ``psrp`` turns them into real PSRP messages
(PSObjects on the output stream, ErrorRecords on the error stream, a Failed pipeline state for terminating errors).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class SandboxObject:
    """A PSObject as it crosses the wire (CLIXML ``<Obj>``).

    ``type_names`` complete, most specific first (``<TN>``; nothing is appended); ``adapted`` the .NET object's own
    properties (``<Props>``); ``members`` the extended members, note properties PowerShell or a cmdlet added
    (``<MS>``); ``to_string`` the ``<ToString>`` ("" writes none); ``items`` a collection's elements (``<LST>``).
    Values are str, int, bool, None, bytes (``<BA>``), uuid.UUID (``<G>``), aware datetimes (``<DT>``),
    :class:`EnumValue`, lists and nested SandboxObjects; one SandboxObject used twice in an object is sent once and
    then referenced (``<Ref>``), as PowerShell does.
    """

    type_names: list[str]
    adapted: dict[str, Any] = dataclasses.field(default_factory=dict)
    members: dict[str, Any] = dataclasses.field(default_factory=dict)
    to_string: str = ""
    items: list[Any] | None = None


@dataclasses.dataclass(frozen=True)
class EnumValue:
    """A .NET enum value, serialized as PowerShell does: ``<Obj>`` with the enum's type names, ToString and
    ``<I32>``. ``members`` are the enum's (name, value) pairs in ascending value order."""

    type_name: str
    members: tuple[tuple[str, int], ...]
    value: int
    flags: bool = False

    @property
    def text(self) -> str:
        """``Enum.ToString()``: flag names in ascending value order joined by ", ", or the zero member's name."""
        if not self.flags or self.value == 0:
            return next((name for name, value in self.members if value == self.value), str(self.value))
        return ", ".join(name for name, value in self.members if value and self.value & value == value)

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass
class ErrorInfo:
    """An ErrorRecord: message, FullyQualifiedErrorId, category name (System.Management.Automation.ErrorCategory)."""

    message: str
    error_id: str = "System.Management.Automation.RuntimeException"
    category: str = "NotSpecified"
    exception_type: str = "System.Management.Automation.RuntimeException"
    target: str | None = None
    activity: str | None = None  # CategoryInfo.Activity: the command that wrote it


class TerminatingError(Exception):
    """The statement ends in a terminating error with this record: in a batch (several statements) the record goes
    to the error stream and the next statement runs; a single statement's pipeline ends Failed (exbe.sandbox.psrp)."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class RunspaceLost(TerminatingError):
    """The runspace is gone while a statement runs: the whole pipeline ends Failed, batch or not."""


@dataclasses.dataclass
class Outcome:
    """Everything one command (one statement) produced, in order: output objects and non-terminating errors."""

    #: str (a step's result JSON) or SandboxObject; inside ``exchange``, its Live objects before serialization
    output: list[Any] = dataclasses.field(default_factory=list)
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


#: The real message of a restricted (no-language) runspace that is handed a script.
NO_LANGUAGE_MESSAGE = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
)

#: What PowerShell says of a command name it cannot resolve (CommandNotFoundException).
COMMAND_NOT_FOUND_MESSAGE = (
    "The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. "
    "Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
)

#: What a WinRM script that opens a second hop to the Exchange endpoint gets (Kerberos/NTLM, no CredSSP).
SECOND_HOP_MESSAGE = (
    "Connecting to remote server {server} failed with the following error message : WinRM cannot process the "
    "request. The following error with errorcode 0x8009030e occurred while using Kerberos authentication: "
    "A specified logon session does not exist. It may already have been terminated. For more information, see the "
    "about_Remote_Troubleshooting Help topic."
)

#: What the sandbox says of a script it does not recognise as one of exbe's rendered steps.
UNRECOGNISED_SCRIPT_MESSAGE = (
    "The exbe sandbox cannot execute arbitrary PowerShell: this script is not an unmodified exbe step rendering "
    "({reason}). Run it on a real Exchange server."
)


def command_not_found(name: str) -> ErrorInfo:
    """The ErrorRecord of ``CommandNotFoundException`` for ``name``."""
    return ErrorInfo(COMMAND_NOT_FOUND_MESSAGE.format(name=name), error_id="CommandNotFoundException",
                     category="ObjectNotFound",
                     exception_type="System.Management.Automation.CommandNotFoundException", target=name)
