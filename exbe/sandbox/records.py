"""What the simulated PowerShell side hands back to the protocol layer: objects, errors, terminating errors.

The domain model (``steps``, ``exchange``) speaks only these types; ``psrp`` turns them into real PSRP messages
(PSObjects on the output stream, ErrorRecords on the error stream, a Failed pipeline state for terminating errors).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class SandboxObject:
    """A PSObject as a cmdlet would emit it: type names (most specific first), properties, ToString()."""

    type_names: list[str]
    properties: dict[str, Any]
    to_string: str = ""


@dataclasses.dataclass
class ErrorInfo:
    """An ErrorRecord: message, FullyQualifiedErrorId, category name (System.Management.Automation.ErrorCategory)."""

    message: str
    error_id: str = "System.Management.Automation.RuntimeException"
    category: str = "NotSpecified"
    exception_type: str = "System.Management.Automation.RuntimeException"
    target: str | None = None


class TerminatingError(Exception):
    """The command ends the pipeline in the Failed state with this error record."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


@dataclasses.dataclass
class Outcome:
    """Everything one command (one statement) produced, in order: output objects and non-terminating errors."""

    output: list[Any] = dataclasses.field(default_factory=list)  # str (step result JSON) or SandboxObject
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


#: The real message of a restricted (no-language) runspace that is handed a script.
NO_LANGUAGE_MESSAGE = (
    "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
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
