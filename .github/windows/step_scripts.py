"""Run every exbe step script, rendered as exbe renders it, directly in Windows PowerShell 5.1 on this machine.

The sandbox never executes PowerShell (it recognises exbe's scripts and applies them in Python), so this is where
the templates meet real cmdlets, real objects and 5.1's serializer. Each script is written as exbe render writes
one (UTF-8 with BOM) and run with ``powershell.exe -File``:

* as rendered (the template sets ``Set-StrictMode -Version 2.0``), and again with that one line raised to
  ``Set-StrictMode -Version Latest``, which must change nothing but the strictness;
* its output must hold exactly one result envelope that exbe.contract accepts and its step's result schema allows,
  and that envelope must be ``ok``.

The inputs are planned the way exbe's flow plans them, from this machine's own facts (the facts script runs
first): the mutating steps with ``dry_run`` (``-WhatIf``), trust and bind also for real with the certificate
already trusted and bound, so they take their real path and change nothing, and exbe's lock shown, taken and
released. Then the one real change: a replacement round trip on the non-SNI ``*:444:`` and ``127.0.0.1:443:``
bindings (a CSP clone bound on both, the original bound back, the clone cleaned up), each step checked against
the bindings it reports before and after. Every rendered script, the hand-run
ones included, must also parse with no error in 5.1's own parser. With PowerShell 7 (``pwsh``) on the machine, a step
script must refuse to run there with one failed envelope. Results go to a JUnit file (junitparser, of the
test extras), one test case per run.

    python .github/windows/step_scripts.py --junit reports/step-scripts.xml --work reports/step-scripts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from junitparser import Failure, JUnitXml, TestCase, TestSuite

from exbe import contract, steps
from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.render import MANUAL_TASKS, manual_input, render_manual, render_step, to_file_bytes
from exbe.selection import select_backend, self_signed_exchange_certs
from exbe.steps import bind, cleanup, clone, export, facts, lock, reload, restart, trust

STRICT_AS_RENDERED = "Set-StrictMode -Version 2.0"
STRICT_LATEST = "Set-StrictMode -Version Latest"
PLATFORM_REFUSAL = "exbe needs Windows PowerShell 5.1 (Desktop)"
RUN_ID = "exbe-ci-step-scripts"


@dataclasses.dataclass(frozen=True)
class Planned:
    """One run of one step script: a name for the report, the step, and its input document; ``secure_argument``:
    the script gets a SecureString as its first argument (export's PFX password), so it runs with ``-Command``."""

    name: str
    step: str
    data: dict[str, Any]
    secure_argument: bool = False


def strict_latest(script: str) -> str:
    """``script`` with its one strict-mode line raised to Latest (the only difference)."""
    if script.count(STRICT_AS_RENDERED) != 1:
        raise AssertionError(f"expected exactly one {STRICT_AS_RENDERED!r} line in the rendered script")
    return script.replace(STRICT_AS_RENDERED, STRICT_LATEST)


def plan_runs(host: HostFacts) -> list[Planned]:
    """The step inputs, planned from ``host`` as exbe's flow plans them; every registered step at least once."""
    dry = Settings(dry_run=True)
    selected = host.certificate(select_backend(host, Settings()).thumbprint)
    assert selected is not None
    candidates = [c.thumbprint for c in self_signed_exchange_certs(host, dry.friendly_name)]
    planned = [
        Planned("facts", "facts", facts.plan(Settings())),
        Planned("clone -WhatIf", "clone", clone.plan(selected, dry_run=True)),
        Planned("trust -WhatIf", "trust", trust.plan(selected.thumbprint, dry_run=True)),
        Planned("trust, already trusted", "trust", trust.plan(selected.thumbprint, dry_run=False)),
        Planned("bind -WhatIf", "bind", bind.plan(host, selected.thumbprint, dry)),
        Planned("bind, already bound", "bind", bind.plan(host, selected.thumbprint, Settings())),
        Planned("restart -WhatIf", "restart", restart.plan(dry_run=True)),
        # the bound certificate among them: the script itself must refuse to remove it
        Planned("cleanup -WhatIf", "cleanup", cleanup.step_input(candidates, dry)),
        Planned("lock show", "lock", lock.request("show", RUN_ID, "step_scripts.py", "verify")),
        # taken and given back: the machine is left without a lock
        Planned("lock acquire", "lock", lock.request("acquire", RUN_ID, "step_scripts.py", "renew")),
        Planned("lock release", "lock", lock.request("release", RUN_ID, "step_scripts.py", "renew")),
        Planned("reload -WhatIf", "reload", reload.plan(dry_run=True)),
        # the bound certificate's key is exportable on the runner (setup-exchange-layout.ps1)
        Planned("export with a SecureString password", "export", export.plan(selected.thumbprint),
                secure_argument=True),
    ]
    missing = set(steps.REGISTRY) - {p.step for p in planned}
    if missing:
        raise AssertionError(f"no run planned for the step(s) {', '.join(sorted(missing))}")
    return planned


def replacement_round_trip(run: Runner, work: Path, host: HostFacts) -> list[TestCase]:
    """Bind a fresh CSP clone of the bound certificate on ``*:444:`` and ``127.0.0.1:443:`` (which carry the bound
    one, as on the captured servers), bind the original back, remove the clone: the bind template's replacement of
    a certificate a binding already carries, run for real. The runner is left as it was."""
    original = select_backend(host, Settings()).thumbprint
    cases: list[TestCase] = []
    clone_thumbprint: str | None = None

    def step(name: str, step_name: str, data: dict[str, Any], check: Callable[[dict[str, Any]], str | None]) -> bool:
        started = time.monotonic()
        try:
            envelope, output = run_script(run, work, name, step_name, render_step(step_name, data))
            failure = check(envelope) if envelope["ok"] else f"the envelope is not ok: {envelope['error']}"
        except AssertionError as exc:
            failure, output = str(exc), ""
        cases.append(case(name, started, failure, output))
        return failure is None

    def cloned(envelope: dict[str, Any]) -> str | None:
        nonlocal clone_thumbprint
        clone_thumbprint = envelope["data"]["new_thumbprint"]
        return None if envelope["data"]["provider_type"] == "CSP" else f"the clone is not a CSP key: {envelope}"

    selected = host.certificate(original)
    assert selected is not None
    if not step("clone for the replacement round trip", "clone", clone.plan(selected, dry_run=False), cloned):
        return cases
    assert clone_thumbprint is not None
    for name, thumbprint, replaced in (("bind, replacing the certificate of *:444: and 127.0.0.1:443:",
                                        clone_thumbprint, original),
                                       ("bind, putting the original back on both", original, clone_thumbprint)):
        now = read_facts(run, work)
        if not step(name, "bind", bind.plan(now, thumbprint, Settings()),
                    lambda envelope, t=thumbprint, r=replaced: replaced_both(envelope, r, t)):
            break
    step("cleanup of the clone", "cleanup", cleanup.step_input([clone_thumbprint], Settings()),
         lambda envelope: None if envelope["data"]["removed_my"] == [clone_thumbprint]
         else f"the clone was not removed: {envelope['data']}")
    return cases


def replaced_both(envelope: dict[str, Any], before: str, after: str) -> str | None:
    """Why a bind envelope does not show both bindings moved from ``before`` to ``after`` (None when it does)."""
    data = envelope["data"]
    wanted = ({"backend": before, "loopback": before}, {"backend": after, "loopback": after})
    got = (data.get("before"), data.get("after"))
    if not envelope["changed"] or got != wanted:
        return f"expected before/after {wanted}, the bind step reported {got} (changed: {envelope['changed']})"
    return None


def read_facts(run: Runner, work: Path) -> HostFacts:
    envelope, output = run_script(run, work, "facts", "facts", render_step("facts", facts.plan(Settings())))
    if not envelope["ok"]:
        raise AssertionError(f"the facts script failed: {envelope['error']}\n{output}")
    return HostFacts.parse(envelope["data"])


def check_output(step: str, stdout: str) -> dict[str, Any]:
    """The one result envelope of ``step`` in a script's output, checked as exbe checks it (ContractError if not)."""
    envelope = contract.parse_result(step, stdout.splitlines())
    steps.get(step).check_result(envelope)
    return envelope


Runner = Callable[[Path], subprocess.CompletedProcess[str]]


def powershell(executable: str, *, secure_argument: bool = False) -> Runner:
    def run(path: Path) -> subprocess.CompletedProcess[str]:
        how = ["-File", str(path)] if not secure_argument else [
            "-Command", f"& '{path}' (ConvertTo-SecureString -String ([guid]::NewGuid().ToString('N')) -AsPlainText "
                        "-Force)"]  # a throwaway password made on the runner, as exbe's travels: a SecureString
        return subprocess.run([executable, "-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
                               *how], capture_output=True, text=True, timeout=600)
    return run


def file_name(name: str) -> str:
    """A report name as a script file name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".ps1"


def run_script(run: Runner, work: Path, name: str, step: str, script: str) -> tuple[dict[str, Any], str]:
    """Write ``script`` as exbe render does, run it, and return its checked envelope and the raw output."""
    path = work / file_name(name)
    path.write_bytes(to_file_bytes(script))
    proc = run(path)
    output = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    if proc.returncode != 0:
        raise AssertionError(f"powershell.exe exited with {proc.returncode}\n{output}")
    try:
        return check_output(step, proc.stdout), output
    except contract.ContractError as exc:
        raise AssertionError(f"{exc}\n{output}") from None


def parse_errors(executable: str, work: Path, scripts: dict[str, str]) -> dict[str, list[str]]:
    """Each script's errors in Windows PowerShell's own parser (``[Parser]::ParseFile``), by name."""
    paths = {}
    for name, text in scripts.items():
        paths[name] = work / ("parse_" + file_name(name))
        paths[name].write_bytes(to_file_bytes(text))
    listing = work / "parse.json"
    listing.write_text(json.dumps({name: str(path) for name, path in paths.items()}), encoding="utf-8")
    command = (
        "$ErrorActionPreference = 'Stop'; $result = @{}; "
        f"$files = Get-Content -Raw -LiteralPath '{listing}' | ConvertFrom-Json; "
        "foreach ($entry in $files.PSObject.Properties) { $tokens = $null; $errors = $null; "
        "[void][System.Management.Automation.Language.Parser]::ParseFile($entry.Value, [ref]$tokens, [ref]$errors); "
        "$result[$entry.Name] = @($errors | ForEach-Object { '{0}: {1}' -f $_.Extent.StartLineNumber, $_.Message }) }; "
        "ConvertTo-Json -InputObject $result -Compress -Depth 3"
    )
    proc = subprocess.run([executable, "-NoProfile", "-NonInteractive", "-Command", command], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the parse check failed to run: {proc.stderr}")
    found: dict[str, Any] = json.loads(proc.stdout)
    # 5.1's ConvertTo-Json may write a one-element array as its element
    return {name: errors if isinstance(errors, list) else [errors] if errors else []
            for name, errors in found.items()}


def case(name: str, started: float, failure: str | None = None, output: str = "") -> TestCase:
    test = TestCase(name, classname="step_scripts", time=round(time.monotonic() - started, 3))
    test.system_out = output
    if failure:
        found = Failure(failure.splitlines()[0][:300])
        found.text = failure
        test.result = [found]
    return test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--junit", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="where the rendered scripts are written")
    parser.add_argument("--powershell", default="powershell.exe")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    run = powershell(args.powershell)
    cases: list[TestCase] = []

    started = time.monotonic()
    first = facts.plan(Settings())
    try:
        envelope, output = run_script(run, args.work, "facts (planning)", "facts", render_step("facts", first))
        failure = None if envelope["ok"] else f"the facts script failed: {envelope['error']}"
    except AssertionError as exc:
        failure, output = str(exc), ""
    cases.append(case("facts script reads this host (input for the others)", started, failure, output))
    if failure:
        return write_report(args.junit, cases)
    host = HostFacts.parse(envelope["data"])

    planned_runs = plan_runs(host)
    rendered = {planned.name: render_step(planned.step, planned.data) for planned in planned_runs}
    # every script as rendered, then every one under Latest: a lock taken is released before it is taken again
    for label, variant in (("", lambda text: text), (" under Set-StrictMode -Version Latest", strict_latest)):
        for planned in planned_runs:
            text = variant(rendered[planned.name])
            started = time.monotonic()
            try:
                runner = powershell(args.powershell, secure_argument=True) if planned.secure_argument else run
                envelope, output = run_script(runner, args.work, planned.name + label, planned.step, text)
                failure = None if envelope["ok"] else f"the envelope is not ok: {envelope['error']}"
            except AssertionError as exc:
                failure, output = str(exc), ""
            cases.append(case(planned.name + label, started, failure, output))

    cases += replacement_round_trip(run, args.work, host)

    for task in MANUAL_TASKS:
        rendered[f"manual {task}"] = render_manual(task, manual_input(Settings()))
    started = time.monotonic()
    errors = parse_errors(args.powershell, args.work, rendered)
    for name, found in sorted(errors.items()):
        cases.append(case(f"{name} parses in Windows PowerShell 5.1", started,
                          "; ".join(found) if found else None))

    core = shutil.which("pwsh")
    if core:
        started = time.monotonic()
        try:
            envelope, output = run_script(powershell(core), args.work, "facts in PowerShell 7", "facts",
                                          render_step("facts", first))
            failure = (None if not envelope["ok"] and PLATFORM_REFUSAL in (envelope["error"] or "")
                       else f"expected the platform refusal, got {envelope}")
        except AssertionError as exc:
            failure, output = str(exc), ""
        cases.append(case("a step script refuses PowerShell 7 with one failed envelope", started, failure, output))

    return write_report(args.junit, cases)


def write_report(path: Path, cases: list[TestCase]) -> int:
    """Write the JUnit file and say how it went; the exit code (1 when a case failed)."""
    suite = TestSuite("exbe step scripts on Windows PowerShell 5.1")
    for test in cases:
        suite.add_testcase(test)
    report = JUnitXml()
    report.add_testsuite(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    report.write(str(path))
    failed = [c.name for c in cases if not c.is_passed]
    print(f"{len(cases) - len(failed)} of {len(cases)} passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
