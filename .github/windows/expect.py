"""Assert what an exbe run record (``--json``) says, for the Windows workflow's steps.

    python .github/windows/expect.py RECORD --exit CODE [--expect-exit N] [STEP=STATUS ...] [STEP~TEXT ...]
        [--unchanged] [--method clone|exchange] [--check ID=STATUS ...] [--warning TEXT] [--served-as RECORD]
        [--exchange-read] [--replaced backend|loopback ...]

``STEP=STATUS``: the step has that status on every server of the record; ``STEP~TEXT``: its message contains TEXT;
``--unchanged``: no step changed anything; ``--method``: how renew renewed; ``--check``: a verify check's status;
``--warning``: some step warned with TEXT; ``--served-as``: port 444 served the same certificate as in that other
record's verify; ``--exchange-read``: preflight read the Exchange endpoint; ``--replaced``: bind replaced the
certificate the binding already carried (``backend``: ``*:444:``, ``loopback``: ``127.0.0.1:443:``) with the bound one.
Prints each failed expectation and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def served(record: dict[str, Any]) -> list[Any]:
    """The thumbprint the TLS probe of 444 saw, per server."""
    return [check.get("value") for server in record["servers"] for step in server["steps"]
            for check in step.get("checks", []) if check["id"] == "tls_444_serves_bound"]


def problems(record: dict[str, Any], args: argparse.Namespace) -> list[str]:
    found = []
    if args.exit != args.expect_exit:
        found.append(f"exbe exited with {args.exit}, expected {args.expect_exit}")
    for server in record["servers"]:
        name = server["server"]
        steps = {step["step"]: step for step in server["steps"]}
        for expectation in args.expectations:
            step, sep, wanted = expectation.partition("=") if "=" in expectation else expectation.partition("~")
            got = steps.get(step)
            if got is None:
                found.append(f"{name}: no {step} step (steps: {', '.join(steps)})")
            elif sep == "=" and got["status"] != wanted:
                found.append(f"{name}: {step} is {got['status']}, expected {wanted}: {got['message']}")
            elif sep == "~" and wanted not in got["message"]:
                found.append(f"{name}: {step} says {got['message']!r}, expected it to mention {wanted!r}")
        if args.unchanged:
            found += [f"{name}: {step['step']} changed something: {step['message']}"
                      for step in server["steps"] if step["changed"]]
        if args.method and steps.get("renew", {}).get("data", {}).get("method") != args.method:
            found.append(f"{name}: renew did not use the {args.method} method: {steps.get('renew')}")
        checks = {check["id"]: check for step in server["steps"] for check in step.get("checks", [])}
        for expectation in args.check:
            check_id, _, wanted = expectation.partition("=")
            got = checks.get(check_id)
            if got is None or got["status"] != wanted:
                found.append(f"{name}: check {check_id} is {got and got['status']}, expected {wanted}: "
                             f"{got and got['message']}")
        if args.warning and not any(args.warning in w for step in server["steps"] for w in step["warnings"]):
            found.append(f"{name}: no step warned {args.warning!r}")
        found += [f"{name}: {problem}" for problem in not_replaced(steps.get("bind"), args.replaced)]
        if args.exchange_read and not (steps.get("preflight", {}).get("data") or {}).get("exchange"):
            found.append(f"{name}: preflight did not read the Exchange endpoint: {steps.get('preflight')}")
    if args.served_as:
        earlier = served(json.loads(args.served_as.read_text(encoding="utf-8")))
        if not earlier or served(record) != earlier:
            found.append(f"port 444 served {served(record)}, expected {earlier} as in {args.served_as}")
    return found


def not_replaced(bind: dict[str, Any] | None, roles: list[str]) -> list[str]:
    """Why bind did not replace, on each of ``roles``, a certificate the binding carried with the one it bound."""
    if not roles:
        return []
    data = (bind or {}).get("data") or {}
    wanted, before, after = data.get("thumbprint"), data.get("before") or {}, data.get("after") or {}
    return [f"bind did not replace the certificate of the {role} binding: {before.get(role)} -> {after.get(role)}, "
            f"bound {wanted}" for role in roles
            if not (wanted and before.get(role) and before.get(role) != wanted and after.get(role) == wanted)]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("expectations", nargs="*", metavar="STEP=STATUS|STEP~TEXT")
    parser.add_argument("--exit", type=int, required=True, help="the exit code exbe returned")
    parser.add_argument("--expect-exit", type=int, default=0)
    parser.add_argument("--unchanged", action="store_true")
    parser.add_argument("--method", choices=("clone", "exchange"))
    parser.add_argument("--check", action="append", default=[], metavar="ID=STATUS")
    parser.add_argument("--warning")
    parser.add_argument("--served-as", type=Path)
    parser.add_argument("--exchange-read", action="store_true")
    parser.add_argument("--replaced", action="append", default=[], choices=("backend", "loopback"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if not args.record.exists():
        print(f"{args.record} does not exist: exbe wrote no record (exit {args.exit})")
        return 1
    found = problems(json.loads(args.record.read_text(encoding="utf-8")), args)
    for problem in found:
        print(f"::error::{args.record.name}: {problem}")
    if not found:
        print(f"{args.record.name}: as expected")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
