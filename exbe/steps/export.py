"""``export`` (read only): one certificate of ``LocalMachine\\My`` with its private key, as PFX bytes protected by a
password that arrives as the script's first argument, a SecureString (never in the script text or its input
document): ``X509Certificate2.Export(Pfx, SecureString)``. What ``exbe auth`` imports on a server that lacks the
organization's Auth certificate (``../shared/auth-certificate.md`` §3, "Import where missing").

The PFX bytes come back Base64 in the envelope's data; exbe keeps them in memory only and never reports them.
A hand run: ``.\\export.ps1 (Read-Host -AsSecureString -Prompt 'PFX password')``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "export"
SUMMARY = "export a certificate of LocalMachine\\My with its key as PFX bytes (password: a SecureString argument)"
MUTATING = False
INPUTS = {"thumbprint": (str,)}
#: ``pfx``: Base64 of the PFX bytes; ``has_private_key``/``exportable``: what the store said about the key.
RESULT = {"thumbprint": (str,), "pfx": (str,), "has_private_key": (bool,)}


def plan(thumbprint: str) -> dict[str, Any]:
    return {"thumbprint": thumbprint}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    return f"exported {data.get('thumbprint')} with its key (PFX, kept in memory)"
