"""``trust``: put the certificate's public part into LocalMachine\\Root when it is not there (never a duplicate), as
Exchange setup does for its self-signed certificate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "trust"
SUMMARY = "add the certificate's public part to LocalMachine\\Root unless it is there"
INPUTS = {"thumbprint": (str,), "dry_run": (bool,)}
RESULT = {"thumbprint": (str,), "present_before": (bool,), "present_after": (bool,)}


def plan(thumbprint: str, *, dry_run: bool) -> dict[str, Any]:
    return {"thumbprint": thumbprint, "dry_run": dry_run}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    thumb = data.get("thumbprint")
    if changed:
        return f"{'would add' if dry_run else 'added'} {thumb} to LocalMachine\\Root"
    return f"{thumb} is already in LocalMachine\\Root"


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # the thumbprint is a value here, not a key: keys are never masked, values are (exbe.redaction)
    return ({"thumbprint": data.get("thumbprint"), "in_root": data.get("present_before")},
            {"thumbprint": data.get("thumbprint"), "in_root": data.get("present_after")})
