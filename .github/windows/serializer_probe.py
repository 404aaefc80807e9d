"""What a Windows PowerShell endpoint shaped like Exchange's sends to pypsrp, through exbe's own transport.

    python .github/windows/serializer_probe.py --config exbe-ci.yaml --server runner-standin --out reports/x.json

Sends ONE pipeline of three statements to the server's Exchange endpoint (on the runner: the stand-in session
configuration of register-exchange-standin.ps1, shaped like Exchange's: built-ins private but Out-Default,
Get-FormatData, Select-Object, Measure-Object and Exit-PSSession; NoLanguage), as exbe sends its reads:

1. ``Get-ExchangeCertificate | Select-Object -Property Thumbprint,Services,RawData`` — exbe's projection;
2. ``Get-ChildItem`` — a built-in the endpoint keeps private: PowerShell cannot resolve it;
3. ``Get-ExchangeCertificate`` — the full objects.

It writes, per object, its type names, the names of the properties that arrived and what exbe's reader makes of
it, and each statement's answer as :mod:`exbe.batch` reads it. It fails unless the projected objects arrive with
Thumbprint, Services and RawData and exbe reads them, the full objects arrive, the private built-in is refused as
a command PowerShell cannot find, and — PowerShell's batch (real-server-shapes.md §4) — that refusal is an error
record in the middle of a pipeline that still completes and runs the statement after it.
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

from exbe import batch
from exbe.config import Credentials
from exbe.exchange import PROJECTED_PROPERTIES, kind_of, read_certificate
from exbe.inventory import load_inventory
from exbe.transport import Session

#: A built-in command that Exchange's endpoint (and the stand-in) keeps private.
PRIVATE_BUILTIN = "Get-ChildItem"


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
        "exbe_services": list(cert.services) if cert and cert.services is not None else None,
    }


def statements(server: str) -> tuple[list[list[tuple[str, dict[str, Any]]]], list[batch.Statement]]:
    """The probe's pipeline and how exbe.batch knows each statement."""
    sent = [[("Get-ExchangeCertificate", {"Server": server}), ("Select-Object", {"Property": PROJECTED_PROPERTIES})],
            [(PRIVATE_BUILTIN, {})],
            [("Get-ExchangeCertificate", {"Server": server})]]
    known = [batch.Statement("projection", lambda o: kind_of(o) == "projection",
                             ("Get-ExchangeCertificate", "Select-Object")),
             batch.Statement(PRIVATE_BUILTIN, lambda o: False, (PRIVATE_BUILTIN,), writes_output=False),
             batch.Statement("full objects", lambda o: kind_of(o) == "certificate", ("Get-ExchangeCertificate",))]
    return sent, known


def problems(report: dict[str, Any]) -> list[str]:
    """What the endpoint did that Exchange's endpoint, as exbe expects it, would not."""
    found = []
    by_name = {answer["statement"]: answer for answer in report["statements"]}
    projection, private, full = by_name["projection"], by_name[PRIVATE_BUILTIN], by_name["full objects"]
    projected = [o for o in report["objects"] if o["exbe_kind"] == "projection"]
    if not projected:
        found.append(f"no projected certificate arrived: {projection['errors'] or 'no error record'}")
    for obj in projected:
        missing = set(PROJECTED_PROPERTIES) - set(obj["extended_properties"])
        if missing or obj["exbe_thumbprint"] is None or obj["exbe_services"] is None:
            found.append(f"a projected object exbe cannot read (missing {sorted(missing)}): {obj}")
    if not full["output"] or any(o["exbe_thumbprint"] is None for o in report["objects"]
                                 if o["exbe_kind"] == "certificate"):
        found.append(f"the full objects did not arrive, or exbe cannot read one: {full}")
    if not any("CommandNotFoundException" in (e["reason"], e["error_id"]) for e in private["errors"]):
        found.append(f"{PRIVATE_BUILTIN} was not refused as a command the session cannot find: {private}")
    if report["pipeline_failed"]:
        found.append(f"the pipeline failed ({report['pipeline_failed']}): a statement's error should be a record in "
                     "a batch that completes (real-server-shapes.md §4)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    document = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    (server,) = [s for s in load_inventory(document["exbe"]) if s.name == args.server]
    sent, known = statements(server.name)
    with Session(server, Credentials.from_env()) as session:
        result = session.run_cmdlets(sent)
    answers = batch.read(known, result.events)
    report = {
        "endpoint": server.exchange_url,
        "pipeline_failed": result.failed,
        "objects": [describe(obj) for obj in result.output],
        "statements": [{"statement": a.statement.name, "output": len(a.output), "failed": a.failed,
                        "errors": [vars(e) for e in a.errors], "unplaced": [vars(e) for e in a.unplaced]}
                       for a in answers],
    }
    found = problems(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**report, "problems": found}, indent=1), encoding="utf-8")
    shapes = sorted({(tuple(o["types"][:2]), tuple(o["adapted_properties"] + o["extended_properties"]))
                     for o in report["objects"]})
    lines = [f"### What the endpoint sent for {len(report['objects'])} object(s) ({server.exchange_url})", ""]
    lines += [f"- types {', '.join(types)}; properties {', '.join(props) or '(none)'}" for types, props in shapes]
    lines += [f"- statement {a.statement.name}: {len(a.output)} object(s), "
              + (f"did not answer: {a.why()}" if a.failed else f"{len(a.errors)} record(s)") for a in answers]
    lines.append(f"- the pipeline {'failed: ' + result.failed if result.failed else 'completed'}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))
    for problem in found:
        print(f"::error::{problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
