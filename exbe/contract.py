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
that rendering that step with that input gives the very same text (see ``exbe.render``). Anything else is refused.

Result envelope (every step, success or failure)::

    {"exbe": 1, "step": "<step>", "ok": true|false, "changed": true|false, "dry_run": true|false,
     "data": {...step specific...}, "warnings": ["..."], "error": null | "one line"}

``changed`` is true when the step changed something, or, with ``dry_run``, when it *would* have.

Step inputs and ``data`` (all thumbprints upper-case hex, no spaces; all times ISO 8601 UTC, ``...Z``):

``facts`` (read only; preflight and verify)
    input:  {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
             "friendly_name": "Microsoft Exchange"}
    data:   {"now": time, "computer": {"name": "EXCH01", "fqdn": "exch01.contoso.local"},
             "powershell_version": "5.1.17763.1",
             "certificates": [CERT...],            # Cert:\\LocalMachine\\My
             "root": [{"thumbprint", "subject", "not_after"}...],   # Cert:\\LocalMachine\\Root
             "bindings": [BINDING...],              # https bindings of both sites
             "sites": {"<name>": {"exists": bool, "hsts_enabled": bool, "hsts_header": bool,
                                  "extended_protection": "None|Allow|Require"}},
             "services": {"W3SVC": "Running|Stopped|...", "WAS": "..."},
             "allow_internal_untrusted_certs": int | null}   # HKLM MSExchange OWA value, null when absent
    CERT:   {"thumbprint", "subject", "issuer", "friendly_name", "not_before", "not_after",
             "signature_algorithm" (e.g. "sha256RSA", "sha1RSA", "md5RSA"), "key_algorithm" ("RSA"), "key_size": int,
             "has_private_key": bool, "provider": str | null, "provider_type": "CSP" | "CNG" | null,
             "key_accessible": bool | null (the private key opens: usable by http.sys/schannel; null when there is
                                            no private key), "dns_names": [str],
             "self_signed": bool}
    BINDING: {"site", "protocol": "https", "binding_information": as IIS reports it ("IP:port:hostheader": ":443:",
              "*:444:", "127.0.0.1:443:", "10.0.0.5:444:" ...), "certificate_hash": "HEX" | "",
              "certificate_store": "MY" | ""}      (exbe.facts.Binding reads the meaning; nothing compares the text)

``clone`` (renew without the Exchange endpoint: New-SelfSignedCertificate -CloneCert with a legacy CSP)
    input:  {"source_thumbprint", "provider": "Microsoft RSA SChannel Cryptographic Provider", "key_length": 2048,
             "hash_algorithm": "SHA256", "validity_years": 5, "dry_run": bool}
    data:   {"source_thumbprint", "new_thumbprint": str | null, "provider": str | null,
             "provider_type": "CSP" | "CNG" | null, "key_accessible": bool | null, "not_after": time | null}

``trust`` (public part in LocalMachine\\Root, never duplicated)
    input:  {"thumbprint", "dry_run": bool}
    data:   {"thumbprint", "present_before": bool, "present_after": bool}

``bind`` (Exchange Back End's all-unassigned 444 binding, and the Default Web Site's loopback binding when it
carried the old certificate)
    input:  {"thumbprint", "backend_site", "frontend_site",
             "backend_binding": str | null,   # exact text of the existing binding; null: create "*:444:"
             "loopback_binding": str | null,  # exact text of the 127.0.0.1:443: binding to move; null: leave it
             "loopback_from": str | null,     # move it only when it currently carries this hash
             "dry_run": bool}
    data:   {"thumbprint", "before": {"backend": hash | null, "loopback": hash | null}, "after": {same keys},
             "created_backend_binding": bool, "restored": bool, "ip_specific_444": ["10.0.0.5:444:"...]}
    The script refuses (ok false, nothing changed) when the certificate is not in My, has no private key, has a
    CNG key or a private key that cannot be opened (key_accessible false). NETWORK SERVICE read access is NOT
    required for the back-end binding (http.sys/schannel use the key as SYSTEM); it matters only for SMTP, and
    ``Enable-ExchangeCertificate -Services SMTP`` grants it when exbe is asked to move SMTP. It records the previous
    hashes, and restores them when any change fails (``restored`` true). The 444 binding is never left without a
    certificate; the public 443 binding is never touched; an IP-specific 444 binding is never created.

``restart`` (opt-in)
    input:  {"method": "iisreset" | "services", "timeout_seconds": int, "dry_run": bool}
    data:   {"method", "w3svc_before", "w3svc_after", "was_after"}
    ok is false when W3SVC is not Running at the end.

``cleanup`` (remove superseded certificates chosen by exbe from facts it collected on both endpoints)
    input:  {"thumbprints": [str], "backend_site", "frontend_site", "dry_run": bool}
    data:   {"removed_my": [str], "removed_root": [str], "refused": [{"thumbprint", "reason"}]}
    The script re-checks every https binding of both sites just before removing and refuses a bound certificate.

Exchange endpoint (``Microsoft.Exchange``, no-language mode): exbe sends cmdlets, never scripts; see
``EXCHANGE_CMDLETS`` for the ones exbe calls and their parameters, and ``exbe.exchange`` for how their objects are
read (``RawData`` only on real servers; service assignments through a ``Select-Object`` projection).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

RESULT_SCHEMA_VERSION = 1

#: Steps that run as rendered scripts over WinRM (and in the manual script).
WINRM_STEPS: tuple[str, ...] = ("facts", "clone", "trust", "bind", "restart", "cleanup")

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
    if step not in WINRM_STEPS:
        raise ContractError(f"unknown exbe step {step!r}")
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


def parse_result(step: str, output: list[Any]) -> dict[str, Any]:
    """Decode the one result envelope from a step's output stream.

    Raises :class:`ContractError` when the output holds no envelope, several, or one for another step.
    """
    envelopes = []
    for item in output:
        text = str(item).strip()
        if text.startswith("{") and '"exbe"' in text:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("exbe") == RESULT_SCHEMA_VERSION:
                envelopes.append(doc)
    if len(envelopes) != 1:
        raise ContractError(f"step {step!r} emitted {len(envelopes)} result objects, expected exactly one")
    result = envelopes[0]
    if result.get("step") != step:
        raise ContractError(f"expected the result of step {step!r}, got {result.get('step')!r}")
    missing = {"ok", "changed", "dry_run", "data", "warnings", "error"} - result.keys()
    if missing:
        raise ContractError(f"result of step {step!r} lacks {sorted(missing)}")
    return result
