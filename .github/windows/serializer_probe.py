"""What Windows PowerShell's serializer sends to pypsrp for certificate objects, through exbe's own transport.

    python .github/windows/serializer_probe.py --config exbe-ci.yaml --server runner-standin --out reports/x.json

Runs ``Get-ExchangeCertificate`` on the server's Exchange endpoint (on the runner: the stand-in session
configuration of register-exchange-standin.ps1, whose certificates are real X509Certificate2 objects) and writes,
per object, its type names, the names of the properties that arrived and what exbe's reader
(:func:`exbe.exchange.read_certificate`) makes of it. Fails when no object arrived or exbe cannot read one.
The credentials come from EXBE_USERNAME/EXBE_PASSWORD, as for exbe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from exbe.config import Credentials
from exbe.exchange import kind_of, read_certificate
from exbe.inventory import load_inventory
from exbe.transport import Session


def describe(obj: Any) -> dict[str, Any]:
    """One output object as it arrived: type names, property names (never values), and exbe's reading."""
    cert = read_certificate(obj)
    return {
        "types": [str(name) for name in getattr(obj, "types", []) or []],
        "adapted_properties": sorted(getattr(obj, "adapted_properties", {}) or {}),
        "extended_properties": sorted(getattr(obj, "extended_properties", {}) or {}),
        "exbe_kind": kind_of(obj),
        "exbe_thumbprint": cert.thumbprint if cert else None,
        "exbe_subject": cert.subject if cert else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    document = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    (server,) = [s for s in load_inventory(document["exbe"]) if s.name == args.server]
    with Session(server, Credentials.from_env()) as session:
        result = session.run_cmdlets([[("Get-ExchangeCertificate", {"Server": server.name})]])
    objects = [describe(obj) for obj in result.output]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"endpoint": server.exchange_url, "errors": result.errors,
                                    "failed": result.failed, "objects": objects}, indent=1), encoding="utf-8")
    shapes = sorted({(tuple(o["types"][:2]), tuple(o["adapted_properties"] + o["extended_properties"]))
                     for o in objects})
    lines = [f"### What the serializer sent for {len(objects)} certificate object(s) ({server.exchange_url})", ""]
    lines += [f"- types {', '.join(types)}; properties {', '.join(props) or '(none)'}" for types, props in shapes]
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))
    unreadable = [o for o in objects if o["exbe_thumbprint"] is None]
    if result.failed or not objects or unreadable:
        print(f"::error::Get-ExchangeCertificate: {result.failed or ''} {len(objects)} object(s), "
              f"{len(unreadable)} that exbe cannot read")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
