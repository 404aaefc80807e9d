"""What exbe asks the Exchange endpoint (cmdlets, never scripts) and how it reads the answers.

All reads go in ONE pipeline of several statements (one round trip). Objects are told apart by their type names.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from .transport import PipelineOutput, Session

_TYPES = {
    "ExchangeServer": "server",
    "ExchangeCertificate": "certificate",
    "AuthConfig": "auth",
    "SettingOverride": "override",
    "TransportService": "transport",
    "TransportServer": "transport",  # the type Get-TransportService emits
}


def read_statements(server_name: str) -> list[tuple[str, dict[str, Any]]]:
    """The read-only cmdlets of preflight/verify, for one server."""
    return [
        ("Get-ExchangeServer", {"Identity": server_name}),
        ("Get-ExchangeCertificate", {"Server": server_name}),
        ("Get-AuthConfig", {}),
        ("Get-SettingOverride", {}),
        ("Get-TransportService", {"Identity": server_name}),
    ]


def read_facts(session: Session, server_name: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Exchange facts (see exbe.plan) and the error messages the cmdlets wrote; facts None when the pipeline failed."""
    result = session.run_cmdlets(read_statements(server_name))
    if result.failed:
        return None, [*result.errors, result.failed]
    return normalise(result), result.errors


def normalise(result: PipelineOutput) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "server": None,
        "certificates": [],
        "auth": {"current": None, "next": None, "next_effective": None},
        "serialization_signing": True,
        "internal_transport": None,
    }
    for obj in result.output:
        kind = _kind(obj)
        props = _props(obj)
        if kind == "server":
            facts["server"] = {
                "name": _str(props.get("Name")),
                "fqdn": _str(props.get("Fqdn")),
                "version": _str(props.get("AdminDisplayVersion")),
                "edition": _str(props.get("Edition")),
            }
        elif kind == "certificate":
            facts["certificates"].append({
                "thumbprint": _thumb(props.get("Thumbprint")),
                "services": _services(props.get("Services")),
                "friendly_name": _str(props.get("FriendlyName")),
                "subject": _str(props.get("Subject")),
                "not_after": _time(props.get("NotAfter")),
                "self_signed": bool(props.get("IsSelfSigned")),
            })
        elif kind == "auth":
            facts["auth"] = {
                "current": _thumb(props.get("CurrentCertificateThumbprint")),
                "next": _thumb(props.get("NextCertificateThumbprint")),
                "next_effective": _time(props.get("NextCertificateEffectiveDate")),
            }
        elif kind == "override":
            if _disables_signing(props):
                facts["serialization_signing"] = False
        elif kind == "transport":
            facts["internal_transport"] = _thumb(props.get("InternalTransportCertificateThumbprint"))
    return facts


def new_certificate(session: Session, params: dict[str, Any]) -> tuple[str | None, list[str]]:
    """New-ExchangeCertificate (self-signed, assigned to no service): the new thumbprint and any error messages."""
    result = session.run_cmdlets([("New-ExchangeCertificate", params)])
    errors = [*result.errors, *([result.failed] if result.failed else [])]
    thumbs = [_thumb(_props(o).get("Thumbprint")) for o in result.output if _kind(o) == "certificate"]
    return (thumbs[0] if len(thumbs) == 1 else None), errors


def enable_smtp(session: Session, server_name: str, thumbprint: str) -> list[str]:
    """Enable-ExchangeCertificate -Services SMTP (grants NETWORK SERVICE key access, publishes for direct trust)."""
    result = session.run_cmdlets([("Enable-ExchangeCertificate",
                                   {"Server": server_name, "Thumbprint": thumbprint, "Services": "SMTP",
                                    "Force": True})])
    return [*result.errors, *([result.failed] if result.failed else [])]


# -- reading deserialized objects ------------------------------------------------------------------------------------
def _kind(obj: Any) -> str | None:
    for type_name in getattr(obj, "types", []) or []:
        leaf = str(type_name).rpartition(".")[2]
        if leaf in _TYPES:
            return _TYPES[leaf]
    return None


def _props(obj: Any) -> dict[str, Any]:
    props: dict[str, Any] = {}
    props.update(getattr(obj, "adapted_properties", {}) or {})
    props.update(getattr(obj, "extended_properties", {}) or {})
    return props


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _thumb(value: Any) -> str | None:
    text = "" if value is None else str(value).replace(" ", "").upper()
    return text or None


def _services(value: Any) -> list[str]:
    """Exchange's AllowedServices flags arrive as text like ``IMAP, POP, SMTP`` or ``None``."""
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
    return [s.strip().upper() for s in map(str, items) if s.strip() and s.strip().lower() != "none"]


def _time(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        value = value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(value)
    # .NET writes seven fractional digits (2030-01-01T00:00:00.0000000Z); Python reads at most six
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        parsed = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        return text
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _disables_signing(props: dict[str, Any]) -> bool:
    if str(props.get("SectionName", "")).lower() != "enableserializationdatasigning":
        return False
    params = props.get("Parameters") or []
    params = params if isinstance(params, list) else [params]
    return any(str(p).replace(" ", "").lower() == "enabled=false" for p in params)
