"""Append a summary of JUnit files to the GitHub job summary ($GITHUB_STEP_SUMMARY), or print it without one.

    python .github/windows/junit_summary.py TITLE FILE...

One row per file (tests, passed, failed, skipped) and one line per failed or erroring test case with its message.
exbe's own runs summarise themselves (exbe.ci); this covers the pytest and step-script reports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import junitparser


def summary(title: str, paths: list[Path]) -> str:
    lines = [f"### {title}", "", "| report | tests | passed | failed | skipped |", "|---|---|---|---|---|"]
    failures = []
    for path in paths:
        if not path.exists():
            lines.append(f"| {path.name} | not written | | | |")
            continue
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for suite in junitparser.JUnitXml.fromfile(str(path)):
            for case in suite:
                results = case.result
                if not results:
                    counts["passed"] += 1
                elif isinstance(results[0], junitparser.Skipped):
                    counts["skipped"] += 1
                else:
                    counts["failed"] += 1
                    message = " ".join(str(results[0].message or results[0].text or "").split())[:300]
                    failures.append(f"- **{case.name}** ({path.name}): {message}")
        lines.append(f"| {path.name} | {sum(counts.values())} | {counts['passed']} | {counts['failed']} | "
                     f"{counts['skipped']} |")
    return "\n".join(lines + ([""] + failures if failures else []) + [""])


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    text = summary(argv[0], [Path(arg) for arg in argv[1:]])
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as stream:
            stream.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
