"""The step contract shared by exbe, its PowerShell templates and the sandbox.

A *step script* is a rendered template that runs over WinRM (endpoint ``Microsoft.PowerShell``, Windows PowerShell
5.1) or by hand in the Exchange Management Shell. Every step script has the same shape:

    # exbe-step: <step> | exbe <version> | template <sha256/12>
    <fixed PowerShell text from ps_templates/>
    $ExbeInput = ConvertFrom-Json @'
    <one line of compact, ASCII-only JSON: the step's input document>
    '@
    <fixed PowerShell text from ps_templates/>

and writes exactly one string to the output stream: the compact JSON *result envelope* below. The input document
is the only place where user-supplied values appear; it is a single line that starts with ``{``, so no value can
close the here-string (a closing ``'@`` must start a line) and nothing outside it depends on the values.

The sandbox recognises a script by reading the step name and input document with :func:`parse_script` and checking
that rendering that registered step with that input gives the very same text (see ``exbe.render``), in the wire form
exbe sends (only the functions the step uses, without comments and indentation) or the readable one. Anything else
is refused.

Result envelope (every step, success or failure)::

    {"exbe": 1, "step": "<step>", "ok": true|false, "changed": true|false, "dry_run": true|false,
     "data": {...step specific...}, "warnings": ["..."], "error": null | "one line"}

``changed`` is true when the step changed something, or, with ``dry_run``, when it *would* have.

Each step's input and ``data`` are declared once, as schemas in its module under ``exbe.steps`` (all thumbprints
upper-case hex, no spaces; all times ISO 8601 UTC, ``...Z``); exbe checks every input before rendering and every
envelope it reads against them, and the tests hold the sandbox's answers to the same schemas. A script on a host that
is not Windows PowerShell 5.1 Desktop answers one failed envelope (``data`` empty, ``dry_run`` false: its input was
not read yet).

Exchange endpoint (``Microsoft.Exchange``, no-language mode): exbe sends cmdlets, never scripts; see
``EXCHANGE_CMDLETS`` for the ones exbe calls and their parameters, and ``exbe.exchange`` for how their objects are
read (``RawData`` only on real servers; service assignments through a ``Select-Object`` projection).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

RESULT_SCHEMA_VERSION = 1

#: Exchange cmdlets exbe sends to the Exchange endpoint, with the parameters it uses.
EXCHANGE_CMDLETS: dict[str, tuple[str, ...]] = {
    "Get-ExchangeServer": ("Identity",),
    "Get-ExchangeCertificate": ("Server", "Thumbprint"),
    "Select-Object": ("Property",),
    "Get-AuthConfig": (),
    "Get-SettingOverride": (),
    "Get-TransportService": ("Identity",),
    "New-ExchangeCertificate": (
        "Server", "SubjectName", "DomainName", "FriendlyName", "KeySize", "PrivateKeyExportable", "Services", "Force",
    ),
    "Enable-ExchangeCertificate": ("Server", "Thumbprint", "Services", "Force"),
    "Remove-ExchangeCertificate": ("Server", "Thumbprint", "Confirm"),
}

#: Those of them that only read: a pipeline of these alone may be sent again when its connection drops.
READ_ONLY_CMDLETS = frozenset({"Get-ExchangeServer", "Get-ExchangeCertificate", "Select-Object", "Get-AuthConfig",
                               "Get-SettingOverride", "Get-TransportService"})

HEADER_PREFIX = "# exbe-step: "
_HEADER_RE = re.compile(
    r"\A\ufeff?# exbe-step: (?P<step>[a-z_]+) \| exbe (?P<version>\S+) \| template (?P<hash>[0-9a-f]+)\r?\n")
INPUT_OPEN = "$ExbeInput = ConvertFrom-Json @'"
INPUT_CLOSE = "'@"
_INPUT_RE = re.compile(
    r"^\$ExbeInput = ConvertFrom-Json @'\r?\n(?P<doc>\{[^\r\n]*\})\r?\n'@\r?$", re.MULTILINE
)


class ContractError(ValueError):
    """A script or result does not follow the step contract."""


# -- schemas of step inputs and results (declared per step in exbe.steps) ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class ListOf:
    """A JSON list whose items are all of one kind."""

    item: type


Kind = type | ListOf
#: key -> the kinds of value it accepts (``type(None)`` for null)
Schema = Mapping[str, tuple[Kind, ...]]

_KIND_NAMES: dict[Kind, str] = {str: "a string", bool: "true or false", int: "a whole number", type(None): "null",
                                dict: "an object", ListOf(str): "a list of strings",
                                ListOf(int): "a list of whole numbers", ListOf(dict): "a list of objects"}


def _is_kind(value: Any, kind: Kind) -> bool:
    if isinstance(kind, ListOf):
        return isinstance(value, list) and all(_is_kind(item, kind.item) for item in value)
    if isinstance(value, bool):  # bool is an int in Python; a flag must not pass for a number, nor a number for a flag
        return kind is bool
    return isinstance(value, kind)


def validate(what: str, data: Mapping[str, Any], schema: Schema, *, choices: Mapping[str, tuple[str, ...]] = {},
             exact: bool = True) -> None:
    """Raise :class:`ContractError` naming the first missing, unknown (with ``exact``) or mistyped key."""
    missing = sorted(set(schema) - set(data))
    if missing:
        raise ContractError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(set(data) - set(schema))
    if exact and unknown:
        raise ContractError(f"{what} has unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(schema))}")
    for key, kinds in schema.items():
        value = data[key]
        if not any(_is_kind(value, kind) for kind in kinds):
            wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds)
            raise ContractError(f"{what} {key} must be {wanted}, got {value!r}")
        if key in choices and value not in choices[key]:
            raise ContractError(f"{what} {key} must be one of {', '.join(choices[key])}, got {value!r}")


def encode_input(data: Mapping[str, Any]) -> str:
    """The one-line input document: compact, sorted, ASCII-only JSON (non-ASCII becomes \\uXXXX escapes)."""
    doc = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    if not doc.startswith("{") or "\n" in doc or "\r" in doc:  # pragma: no cover - json.dumps guarantees this
        raise ContractError("input document must be one JSON object on one line")
    return doc


def header(step: str, version: str, template_hash: str) -> str:
    """The first line of a step script."""
    return f"{HEADER_PREFIX}{step} | exbe {version} | template {template_hash}"


def parse_script(text: str) -> tuple[str, dict[str, Any]]:
    """Return ``(step, input)`` of a step script, or raise :class:`ContractError`.

    This only reads the header and the input document; whether the rest of the text is exbe's own rendering is
    decided by re-rendering (``exbe.render.is_exbe_rendering``).
    """
    head = _HEADER_RE.match(text)
    if not head:
        raise ContractError("not an exbe step script (no exbe-step header)")
    step = head.group("step")
    docs = _INPUT_RE.findall(text)
    if len(docs) != 1:
        raise ContractError("an exbe step script carries exactly one input document")
    try:
        data = json.loads(docs[0])
    except json.JSONDecodeError as exc:
        raise ContractError(f"input document is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError("input document must be a JSON object")
    return step, data


def make_result(
    step: str,
    *,
    ok: bool,
    changed: bool = False,
    dry_run: bool = False,
    data: Mapping[str, Any] | None = None,
    warnings: list[str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A result envelope as a dict (what the sandbox emits and what the templates build in PowerShell)."""
    return {
        "exbe": RESULT_SCHEMA_VERSION,
        "step": step,
        "ok": ok,
        "changed": changed,
        "dry_run": dry_run,
        "data": dict(data or {}),
        "warnings": list(warnings or []),
        "error": error,
    }


def encode_result(result: Mapping[str, Any]) -> str:
    """The string a step writes to its output stream."""
    return json.dumps(result, sort_keys=True, separators=(",", ":"))


def envelopes(output: list[Any]) -> list[dict[str, Any]]:
    """Every result envelope in an output stream, decoded, in order (other output is ignored)."""
    found = []
    for item in output:
        text = str(item).strip()
        if text.startswith("{") and '"exbe"' in text:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("exbe") == RESULT_SCHEMA_VERSION:
                found.append(doc)
    return found


def parse_result(step: str, output: list[Any]) -> dict[str, Any]:
    """Decode the one result envelope from a step's output stream.

    Raises :class:`ContractError` when the output holds no envelope, several, or one for another step.
    """
    return one_result(step, envelopes(output))


def one_result(step: str, envelopes: list[dict[str, Any]]) -> dict[str, Any]:
    """The one envelope of ``step`` among decoded ``envelopes`` (see :func:`parse_result`)."""
    if len(envelopes) != 1:
        raise ContractError(f"step {step!r} emitted {len(envelopes)} result objects, expected exactly one")
    result = envelopes[0]
    if result.get("step") != step:
        raise ContractError(f"expected the result of step {step!r}, got {result.get('step')!r}")
    missing = {"ok", "changed", "dry_run", "data", "warnings", "error"} - result.keys()
    if missing:
        raise ContractError(f"result of step {step!r} lacks {sorted(missing)}")
    return result
