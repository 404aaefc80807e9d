"""``clone``: renew without the Exchange endpoint — ``New-SelfSignedCertificate -CloneCert`` (same subject and names,
a new key) with the key in a legacy CSP, because Exchange does not support CNG keys for OWA/ECP (KB 3032024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import Certificate
from ..selection import MIN_KEY_SIZE

NAME = "clone"
SUMMARY = "clone the certificate with New-SelfSignedCertificate -CloneCert, key in a legacy CSP"
#: The key storage provider of a clone: CSS-Exchange forces this legacy CSP for certificates Exchange uses.
PROVIDER = "Microsoft RSA SChannel Cryptographic Provider"
HASH_ALGORITHM = "SHA256"
VALIDITY_YEARS = 5
INPUTS = {"source_thumbprint": (str,), "provider": (str,), "key_length": (int,), "hash_algorithm": (str,),
          "validity_years": (int,), "dry_run": (bool,)}
RESULT = {"source_thumbprint": (str,), "new_thumbprint": (str, type(None)), "provider": (str, type(None)),
          "provider_type": (str, type(None)), "key_accessible": (bool, type(None))}


def plan(selected: Certificate, *, dry_run: bool) -> dict[str, Any]:
    """Same subject and names, a new key of at least 2048 bits in a legacy CSP."""
    return {"source_thumbprint": selected.thumbprint, "provider": PROVIDER,
            "key_length": max(MIN_KEY_SIZE, selected.key_size), "hash_algorithm": HASH_ALGORITHM,
            "validity_years": VALIDITY_YEARS, "dry_run": dry_run}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    new = f" -> {data['new_thumbprint']}" if data.get("new_thumbprint") else ""
    return f"{'would clone' if dry_run else 'cloned'} {data.get('source_thumbprint')}{new}"


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"thumbprint": data.get("source_thumbprint")}, {"thumbprint": data.get("new_thumbprint")}
