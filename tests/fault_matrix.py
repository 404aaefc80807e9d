"""The fault matrix (issue 12, item 8): every sandbox scenario x every fault point x a rerun, judged by reading the
simulated server's state directly (:mod:`exbe.sandbox.state`), never through exbe.

A case is one scenario on one host with one fault (:mod:`exbe.sandbox.faults`): the run of :data:`COMMAND` with the
fault, then the same command again without it. Every state the host saves during both runs is checked against the
state it started in:

* the back-end ``*:444:`` binding is never left empty or invalid (bound to a certificate missing from
  LocalMachine\\My or without a usable private key) when it was valid before;
* the Default Web Site's ``:443:`` binding, the certificates with SMTP and the internal transport certificate never
  change (the matrix never passes ``--smtp move``);
* no certificate is deleted from My or Root while something uses it (a binding, an Exchange service, the internal
  transport, the Auth configuration);
* a run that exits 0 leaves a server that is not broken: 444 bound to a usable, unexpired, strong certificate,
  127.0.0.1:443 on the same one where the server had that binding, W3SVC and WAS running;
* the rerun converges: it exits 0 with a server that is not broken, or ends as the scenario must
  (``MUST_STOP``, ``VERIFY_STILL_FAILS`` of the chain test).

Besides the grid: two renews started at once on one host, and a fleet run cancelled with SIGINT (each a real
``exbe`` process against a fleet served from this one, so its states are observed too).

``python -m tests.fault_matrix`` (``invoke fault-matrix``) runs the full grid and prints its figures;
``tests/test_fault_matrix.py`` runs a reduced grid in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import junitparser

from exbe.main import ExbeProgram
from exbe.sandbox import certs
from exbe.sandbox.faults import DROP_ENDPOINTS, Faults
from exbe.sandbox.fleet import MIXED_SCENARIOS, Fleet
from exbe.sandbox.host import SandboxHost
from exbe.sandbox.state import BACKEND_SITE, FRONTEND_SITE, HostState, scenario_names

from .conftest import PASSWORD, USERNAME
from .test_chain import MUST_STOP, VERIFY_STILL_FAILS
from .test_signals import wait_for_handlers

#: The chain every case runs: every step of it (restart and cleanup included), so that every step can fail.
COMMAND = ("renew", "--restart-iis", "--cleanup", "--min-age", "0")
HOST = "exch01"
#: Fault points besides the drops at each request index (those are counted per scenario from a clean run).
FAULT_POINTS = (
    *(f"step_fail={step}" for step in ("facts", "clone", "trust", "bind", "restart", "cleanup")),
    *(f"step_fail={cmdlet}" for cmdlet in ("Get-ExchangeCertificate", "New-ExchangeCertificate")),
    "bind_com_error",
    *(f"drop_in_step={step}" for step in ("lock", "clone", "trust", "bind", "restart", "cleanup")),
    "http_500",
    "operation_timeout",
    "iisreset_timeout",
    "exchange_unavailable",
)
#: verify's threshold (Settings.fail_days): a server left with fewer days on its back-end certificate is broken.
FAIL_DAYS = 30


@dataclasses.dataclass
class Outcome:
    """One case: what broke an invariant, whether the rerun converged, how long it took."""

    case: str
    code: int
    rerun_code: int | None = None
    violations: list[str] = dataclasses.field(default_factory=list)
    converged: bool = True
    why_not: str = ""
    seconds: float = 0.0
    misleading: str = ""  # the faulted run's exit code said something its record and the server contradict
    third_code: int | None = None  # a third run after the rerun: it must change nothing
    third_changed: str = ""  # what the third run changed ("" when nothing)
    lock_refused: bool = False  # the rerun was refused by a lock the faulted run left
    extra_runs: int = 0  # runs besides those three (`exbe unlock`, a rerun after it)


@dataclasses.dataclass
class Totals:
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def violations(self) -> list[tuple[str, str]]:
        return [(o.case, v) for o in self.outcomes for v in o.violations]

    @property
    def non_converging(self) -> list[tuple[str, str]]:
        return [(o.case, o.why_not) for o in self.outcomes if not o.converged]

    @property
    def runs(self) -> int:
        return sum(1 + (o.rerun_code is not None) + (o.third_code is not None) + o.extra_runs for o in self.outcomes)

    @property
    def misleading(self) -> list[tuple[str, str]]:
        return [(o.case, o.misleading) for o in self.outcomes if o.misleading]

    @property
    def third_changed(self) -> list[tuple[str, str]]:
        return [(o.case, o.third_changed) for o in self.outcomes if o.third_changed]

    @property
    def lock_refused(self) -> list[str]:
        return [o.case for o in self.outcomes if o.lock_refused]

    def text(self) -> str:
        lines = [f"fault matrix: {len(self.outcomes)} cases, {self.runs} exbe runs, {len(self.violations)} invariant "
                 f"violations, {len(self.misleading)} misleading exit codes, {len(self.non_converging)} "
                 f"non-converging reruns, {len(self.third_changed)} third runs that changed something, "
                 f"{len(self.lock_refused)} reruns refused by a lock, {self.seconds:.1f} s"]
        lines += [f"  VIOLATION {case}: {why}" for case, why in self.violations]
        lines += [f"  MISLEADING {case}: {why}" for case, why in self.misleading]
        lines += [f"  NOT CONVERGED {case}: {why}" for case, why in self.non_converging]
        lines += [f"  THIRD RUN CHANGED {case}: {why}" for case, why in self.third_changed]
        lines += [f"  RERUN REFUSED BY A LOCK {case}" for case in self.lock_refused]
        return "\n".join(lines)


# -- reading the host ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def saved_states() -> Iterator[dict[Path, list[HostState]]]:
    """Every state a sandbox host of this process saves while inside, by state file: each step that changes the
    server saves once (exbe.sandbox.host), so this is the server as it was between every two steps."""
    seen: dict[Path, list[HostState]] = {}
    real = HostState.save

    def save(self: HostState, path: Path) -> None:
        real(self, path)
        seen.setdefault(Path(path), []).append(HostState.from_dict(self.to_dict()))

    HostState.save = save  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        HostState.save = real  # type: ignore[method-assign]


def usable(state: HostState, thumbprint: str) -> bool:
    cert = state.find("My", thumbprint)
    return cert is not None and cert.key_pem is not None and bool(cert.key_accessible)


def backend_hash(state: HostState) -> str:
    binding = state.https_binding(BACKEND_SITE, 444)
    return binding.certificate_hash.upper() if binding else ""


def in_use(state: HostState) -> set[str]:
    """Thumbprints something on the server uses."""
    used = {b.certificate_hash.upper() for site in state.sites.values() for b in site.bindings if b.certificate_hash}
    used |= {thumb for thumb, services in state.exchange.services.items() if services}
    used |= {t for t in (state.exchange.internal_transport, state.exchange.auth_current, state.exchange.auth_next) if t}
    return used


def smtp(state: HostState) -> set[str]:
    return {thumb for thumb, services in state.exchange.services.items() if "SMTP" in services}


def public_443(state: HostState) -> str | None:
    binding = state.https_binding(FRONTEND_SITE, 443)
    return binding.certificate_hash.upper() if binding else None


def violations(before: HostState, states: Sequence[HostState]) -> list[str]:
    """What the ``states`` a host went through (in order, starting from ``before``) broke."""
    found: list[str] = []
    valid_before = usable(before, backend_hash(before))
    previous = before
    for n, state in enumerate(states, 1):
        where = f"state {n} of {len(states)}"
        bound = backend_hash(state)
        if valid_before and not usable(state, bound):
            found.append(f"{where}: *:444: is {'empty' if not bound else f'bound to unusable {bound}'}")
        if public_443(state) != public_443(before):
            found.append(f"{where}: Default Web Site :443: changed from {public_443(before)} to {public_443(state)}")
        if smtp(state) != smtp(before):
            found.append(f"{where}: SMTP moved from {sorted(smtp(before))} to {sorted(smtp(state))}")
        if state.exchange.internal_transport != before.exchange.internal_transport:
            found.append(f"{where}: internal transport changed to {state.exchange.internal_transport}")
        used = in_use(previous)
        for store in ("My", "Root"):
            kept = {c.thumbprint for c in state.store(store)}
            for gone in sorted({c.thumbprint for c in previous.store(store)} - kept):
                if gone in used:
                    found.append(f"{where}: {gone} deleted from {store} while in use")
        previous = state
    return found


def broken(before: HostState, state: HostState, now: datetime.datetime | None = None) -> list[str]:
    """Why the server is not fine, read from its state (empty: it is)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    bound = backend_hash(state)
    why: list[str] = []
    cert = state.find("My", bound)
    if cert is None or not usable(state, bound):
        why.append(f"*:444: is {'empty' if not bound else f'bound to unusable {bound}'}")
    else:
        info = certs.cert_info(cert.pem)
        if cert.not_after - now < datetime.timedelta(days=FAIL_DAYS):
            why.append(f"the back-end certificate {bound} expires {cert.not_after:%Y-%m-%d}")
        if info["signature_algorithm"].lower().startswith(("sha1", "md5")) or info["key_size"] < 2048:
            why.append(f"the back-end certificate {bound} is weak ({info['signature_algorithm']}, "
                       f"{info['key_size']} bits)")
        if cert.provider_type == "CNG":  # the key's provider information, as exbe's templates read it
            why.append(f"the back-end certificate {bound} has a CNG key ({cert.provider})")
    loopback = state.https_binding(FRONTEND_SITE, 443, "127.0.0.1")
    if before.https_binding(FRONTEND_SITE, 443, "127.0.0.1") and (
            loopback is None or loopback.certificate_hash.upper() != bound):
        why.append(f"127.0.0.1:443: is on {loopback.certificate_hash if loopback else 'nothing'}, 444 on {bound}")
    why += [f"{name} is {state.services.get(name)}" for name in ("W3SVC", "WAS")
            if state.services.get(name) != "Running"]
    return why


# -- running exbe ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def credentials() -> Iterator[None]:
    """The sandbox account in EXBE_USERNAME/EXBE_PASSWORD while inside (restored after)."""
    saved = {name: os.environ.get(name) for name in ("EXBE_USERNAME", "EXBE_PASSWORD")}
    os.environ.update(EXBE_USERNAME=USERNAME, EXBE_PASSWORD=PASSWORD)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_config(fleet: Fleet, path: Path) -> Path:
    path.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
    return path


def exbe(config: Path, *args: str) -> tuple[int, str]:
    """The `exbe` command line in this process; its exit code and everything it printed. It runs in a thread of its
    own, where exbe leaves the signals alone: Ctrl-C stops the matrix, not just the case under way."""
    out = io.StringIO()

    def run() -> int:
        try:
            ExbeProgram().run(["exbe", "-f", str(config), *args])
        except SystemExit as exc:
            return int(exc.code or 0) if not isinstance(exc.code, str) else 1
        return 0

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), ThreadPoolExecutor(1) as thread:
        code = thread.submit(run).result()
    return code, out.getvalue()


def failed_checks(record: Path) -> set[str]:
    document = json.loads(record.read_text(encoding="utf-8"))
    return {c["id"] for server in document["servers"] for step in server["steps"] for c in step.get("checks", [])
            if c["status"] == "fail"}


def converged(scenario: str, code: int, output: str, record: Path, before: HostState, after: HostState) -> str:
    """Why a rerun did not end as the scenario must ("" when it did)."""
    if scenario in MUST_STOP:
        if code == 1 and MUST_STOP[scenario] in output and backend_hash(after) == backend_hash(before):
            return ""
        return f"exit {code}; a {scenario} server must stop early saying {MUST_STOP[scenario]!r}, changing nothing"
    if scenario in VERIFY_STILL_FAILS:
        failed = failed_checks(record) if record.exists() else set()
        if code == 1 and failed == VERIFY_STILL_FAILS[scenario] and usable(after, backend_hash(after)):
            return ""
        return f"exit {code}, failed checks {sorted(failed)}; expected only {sorted(VERIFY_STILL_FAILS[scenario])}"
    still = broken(before, after)
    if code == 0 and not still:
        return ""
    return f"exit {code}" + (f"; {'; '.join(still)}" if still else "") + f"; {last_line(output)}"


def misleading_exit(code: int, record: Path, still_broken: list[str]) -> str:
    """Why the faulted run's exit code misleads ("" when it does not): 0 while a step failed or the server is
    broken, or non-zero while its record shows nothing failed."""
    document = json.loads(record.read_text(encoding="utf-8")) if record.exists() else None
    failed = [] if document is None else [
        f"{step['step']} failed" for server in document["servers"] for step in server["steps"]
        if step["status"] == "failed"] + [f"error {server['error']}" for server in document["servers"]
                                          if server.get("error")]
    if code == 0 and (failed or still_broken):
        return f"exit 0 while {'; '.join([*failed, *still_broken])[:300]}"
    if code != 0 and document is not None and not failed:
        return f"exit {code} while its record shows no failure"
    return ""


def changes(record: Path) -> str:
    """The steps of a run's record that changed something ("" when none did, or the record is missing)."""
    if not record.exists():
        return f"no record ({record.name})"
    document = json.loads(record.read_text(encoding="utf-8"))
    return ", ".join(f"{server['server']} {step['step']}" for server in document["servers"]
                     for step in server["steps"] if step.get("changed"))


def third_run(outcome: Outcome, config: Path, directory: Path, *args: str) -> None:
    """After a converged rerun: the same command once more must change nothing."""
    record = directory / "third.json"
    outcome.third_code, output = exbe(config, *args, "--json", str(record))
    outcome.third_changed = changes(record) or ("" if record.exists() else last_line(output))


def refused_by_lock(output: str) -> bool:
    return bool(re.search(r"\slock\s+failed\s+locked by", output))


def last_line(output: str) -> str:
    """What a run said last: its last failed step's line (``exch01  lock  failed  <why>``), else its last ``exbe:``
    or FAILED line (the recap's "1 FAILED" alone hides why)."""
    lines = output.splitlines()
    failed = [line for line in lines if re.match(r"\S+\s+\S+\s+failed\s", line)]
    lines = failed or [line for line in lines if line.startswith("exbe:") or "FAILED" in line]
    return lines[-1][:300] if lines else "(no message)"


def run_case(workdir: Path, scenario: str, fault: str) -> tuple[Outcome, dict[str, int]]:
    """One case; also the HTTP requests per endpoint its faulted run made (how many indices a drop can hit)."""
    started = time.monotonic()
    name = f"{scenario} / {fault or 'no fault'}"
    directory = Path(tempfile.mkdtemp(prefix="case-", dir=workdir))
    fleet = Fleet(directory / "sandbox", [(HOST, scenario)], faults={HOST: Faults.parse(fault)}, username=USERNAME,
                  password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            host = fleet.host(HOST)
            before = HostState.load(host.state_path)
            config = write_config(fleet, directory / "exbe.yaml")
            first = directory / "first.json"
            code, output = exbe(config, *COMMAND, "--server", HOST, "--json", str(first))
            counts = {endpoint: host.total_requests(endpoint) for endpoint in DROP_ENDPOINTS}
            outcome = Outcome(case=name, code=code)
            after = HostState.load(host.state_path)
            if code == 0 and broken(before, after):
                outcome.violations.append(f"exit 0 while broken: {'; '.join(broken(before, after))}")
            outcome.misleading = misleading_exit(code, first, broken(before, after) if scenario not in MUST_STOP
                                                 and scenario not in VERIFY_STILL_FAILS else [])
            host.faults = Faults()
            record = directory / "rerun.json"
            outcome.rerun_code, rerun_output = exbe(config, *COMMAND, "--server", HOST, "--json", str(record))
            outcome.lock_refused = refused_by_lock(rerun_output)
            states = list(seen.get(host.state_path, []))
            final = HostState.load(host.state_path)
            outcome.violations += violations(before, states)
            outcome.why_not = converged(scenario, outcome.rerun_code, rerun_output, record, before, final)
            outcome.converged = not outcome.why_not
            if outcome.converged:
                third_run(outcome, config, directory, *COMMAND, "--server", HOST)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome, counts


def grid(workdir: Path, scenarios: Sequence[str], points: Sequence[str] = FAULT_POINTS, *,
         drop_stride: int | None = 1, fail_stride: int | None = None,
         report: Callable[[Outcome], None] | None = None) -> Totals:
    """``scenarios`` x (no fault, ``points``, a one-request drop at every ``drop_stride``-th request index of the
    clean chain on each endpoint, and a single HTTP 500 at every ``fail_stride``-th one; None: none), each with its
    rerun."""
    totals = Totals()
    started = time.monotonic()
    for scenario in scenarios:
        clean, counts = run_case(workdir, scenario, "")
        cases = [*points, *(f"drop_request={endpoint}:{n}" for endpoint in DROP_ENDPOINTS
                            for n in range(1, counts[endpoint] + 1, drop_stride or 1) if drop_stride),
                 *(f"fail_request={endpoint}:{n}" for endpoint in DROP_ENDPOINTS
                   for n in range(1, counts[endpoint] + 1, fail_stride or 1) if fail_stride)]
        for outcome in [clean, *(run_case(workdir, scenario, fault)[0] for fault in cases)]:
            totals.outcomes.append(outcome)
            if report is not None:
                report(outcome)
    totals.seconds = time.monotonic() - started
    return totals


# -- the Auth certificate (issue 23): `exbe auth` on an organization of two servers ---------------------------------
#: Fault points of `exbe auth` on the server that reads and changes the organization (exch01).
AUTH_FAULT_POINTS = (
    *(f"step_fail={cmdlet}" for cmdlet in ("Get-AuthConfig", "Get-ExchangeCertificate", "New-ExchangeCertificate",
                                           "Set-AuthConfig")),
    *(f"step_fail={step}" for step in ("lock", "clone", "reload")),
    *(f"drop_in_step={step}" for step in ("clone", "reload")),
    "exchange_unavailable",
)


def auth_violations(states: dict[str, list[HostState]]) -> list[str]:
    """AuthConfig must name only certificates present on every server, except a next one staged for later (the
    servicelet copies it): in every saved state, the current certificate is in that server's My."""
    found = []
    for name, seen in states.items():
        for state in seen:
            current = state.exchange.auth_current
            if current and state.find("My", current) is None:
                found.append(f"{name}: AuthConfig's current certificate {current} is not in LocalMachine\\My")
    return found


def auth_case(workdir: Path, current_days: int, fault: str) -> Outcome:
    """`exbe auth --all` with ``fault`` on exch01 (the current Auth certificate ``current_days`` from expiry: 45
    stages, -3 replaces), then again without it: no saved state breaks :func:`auth_violations`, and the rerun
    exits 0 with nothing left to do."""
    def prepare(organization: Any) -> None:
        organization.set_auth(current_days)

    return organization_case(workdir, f"auth, current {current_days} days / {fault or 'no fault'}", fault, prepare,
                             auth_violations)


def organization_case(workdir: Path, case: str, fault: str, prepare: Callable[[Any], Any],
                      violations: Callable[[dict[str, list[HostState]]], list[str]]) -> Outcome:
    """An `exbe auth --all` case on an organization of exch01 and exch02: ``prepare`` it, run with ``fault`` on
    exch01, rerun without it; ``violations`` of every saved state and :func:`auth_violations` of the final ones are
    the case's violations, and a third run must find nothing left to do."""
    from exbe.sandbox.authconfig import Organization

    started = time.monotonic()
    outcome = Outcome(case=case, code=0)
    directory = Path(tempfile.mkdtemp(prefix="auth-", dir=workdir))
    hosts = [(HOST, "healthy"), ("exch02", "healthy")]
    fleet = Fleet(directory / "sandbox", hosts, username=USERNAME, password=PASSWORD)
    try:
        with fleet, contextlib.ExitStack() as stack:
            organization = Organization.of_fleet(fleet)  # the organization as it starts: not a state under test
            prepare(organization)
            try:
                seen = stack.enter_context(saved_states())
                fleet.host(HOST).faults = Faults.parse(fault)
                config = write_config(fleet, directory / "exbe.yaml")
                outcome.code, _ = exbe(config, "auth", "--all")
                fleet.host(HOST).faults = Faults()
                record = directory / "rerun.json"
                outcome.rerun_code, output = exbe(config, "auth", "--all", "--json", str(record))
                by_name = {name: list(seen.get(fleet.host(name).state_path, [])) for name, _ in hosts}
                outcome.violations += violations(by_name)
                final = {name: [fleet.host(name).state] for name, _ in hosts}
                outcome.violations += auth_violations(final)
                again, output = exbe(config, "auth", "--all", "--json", str(record))
                steps = [s for s in json.loads(record.read_text(encoding="utf-8"))["servers"][0]["steps"]
                         if s["step"] == "auth"]
                if outcome.rerun_code != 0 or again != 0 or [s["status"] for s in steps] != ["ok"]:
                    outcome.converged = False
                    outcome.why_not = f"rerun exit {outcome.rerun_code}, then {again}: {last_line(output)}"
            finally:
                organization.leave()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


# -- the Auth certificate's import where missing (issue 23, MEAC rows 4-5; helper authimport's block) --------------
#: Fault points of the import on exch01, which exports the certificate (WinRM) and imports it on exch02 (its
#: Exchange endpoint, ``-Server exch02``).
AUTH_IMPORT_FAULT_POINTS = (
    *(f"step_fail={cmdlet}" for cmdlet in ("Get-ExchangeServer", "Import-ExchangeCertificate")),
    "runspace_lost=Import-ExchangeCertificate", "step_fail=export", "runspace_lost=export", "drop_in_step=export",
    "exchange_unavailable",
)


def auth_import_violations(states: dict[str, list[HostState]], held: dict[str, set[str]], current: str) -> list[str]:
    """An import changes no Auth configuration and removes nothing: in every saved state, AuthConfig still names
    ``current`` (and no next one) and each server still holds every certificate ``held`` says it held at the start."""
    found = []
    for name, seen in states.items():
        for state in seen:
            lost = held[name] - {cert.thumbprint for cert in state.my}
            if lost:
                found.append(f"{name}: lost {', '.join(sorted(lost))}")
            if (state.exchange.auth_current, state.exchange.auth_next) != (current, None):
                found.append(f"{name}: AuthConfig changed to {state.exchange.auth_current}/{state.exchange.auth_next}")
    return found


def auth_import_case(workdir: Path, fault: str) -> Outcome:
    """`exbe auth --all` where exch02 lacks the current Auth certificate (and copies nothing by itself), with
    ``fault`` on exch01, then again without it: no saved state loses a certificate or changes AuthConfig; the rerun
    imports it, after which the current certificate is on every server and a third run has nothing to do."""
    start: dict[str, Any] = {}

    def prepare(organization: Any) -> None:
        current = organization.set_auth(400)["current"]
        two = organization.members[1]
        organization.not_replicating.add(two.name)
        two.state.my.remove(two.state.find("My", current))
        two.save()
        start["current"] = current
        start["held"] = {m.state.computer_name.lower(): {c.thumbprint for c in m.state.my}
                         for m in organization.members}

    return organization_case(workdir, f"auth import / {fault or 'no fault'}", fault, prepare,
                             lambda seen: auth_import_violations(seen, start["held"], start["current"]))


# -- two runs at once, and a cancelled run (real `exbe` processes against a fleet served from here) -----------------
def default_signals() -> None:
    """In the child, before exbe starts: the stop signals' default handling, whatever the parent (a test runner, a
    CI agent) set for itself; an ignored SIGINT would be inherited, and a signal at start-up lost."""
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)


def exbe_process(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "exbe", "-f", str(config), *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_signals)


@contextlib.contextmanager
def released_together(host: SandboxHost, runs: int, timeout_s: float = 600.0) -> Iterator[None]:
    """Start ``runs`` exbe processes in the block: the host holds every one at its first WinRM Create (which needs
    the host) until all have sent theirs, then lets them go at once, so their preflight pipelines, and the lock
    requests in them, reach the server together. Without it "at once" depends on start-up: a run holds the lock
    from its preflight to its bind (about 1 s at 150 ms a request), and on a loaded agent two Python processes start
    0.5 s or more apart, after which the second run rightly finds the lock released and renews again."""
    def creates() -> int:
        return host.request_counts().get("winrm", {}).get("Create", 0)

    with host.lock:
        first = creates()
        yield
        deadline = time.monotonic() + timeout_s
        while creates() - first < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{runs - creates() + first} of {runs} runs never asked {host.name} for a shell")
            time.sleep(0.01)


def concurrent_renews(workdir: Path, attempt: int = 0) -> Outcome:
    """Two `renew --force` at once on one healthy host: exactly one changes it, the other reports the lock; never a
    duplicate certificate or a split binding; then a rerun converges."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="concurrent-", dir=workdir))
    outcome = Outcome(case=f"two concurrent renews on one host (try {attempt + 1})", code=0)
    # 150 ms a request, and both runs' lock requests released together (released_together)
    fleet = Fleet(directory / "sandbox", [(HOST, "healthy")], latency_ms=150, username=USERNAME, password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            host = fleet.host(HOST)
            before = HostState.load(host.state_path)
            config = write_config(fleet, directory / "exbe.yaml")
            records = [directory / f"run{n}.json" for n in (1, 2)]
            with released_together(host, len(records)):
                processes = [exbe_process(config, "renew", "--force", "--server", HOST, "--json", str(record))
                             for record in records]
            outputs = [process.communicate(timeout=300)[0] for process in processes]
            after = HostState.load(host.state_path)
            mine = {c.thumbprint for c in before.my}
            created = [c.thumbprint for c in after.my if c.thumbprint not in mine]
            if len(created) > 1:
                outcome.violations.append(f"duplicate certificates created: {', '.join(created)}")
            loopback = after.https_binding(FRONTEND_SITE, 443, "127.0.0.1")
            if loopback and loopback.certificate_hash.upper() != backend_hash(after):
                outcome.violations.append(f"split binding: 444 on {backend_hash(after)}, 127.0.0.1:443: on "
                                          f"{loopback.certificate_hash}")
            changed = [any(s["step"] == "renew" and s["changed"] for srv in json.loads(r.read_text())["servers"]
                           for s in srv["steps"]) for r in records if r.exists()]
            if changed.count(True) != 1:
                said = "; ".join(f"run {n}: {last_line(text)}" for n, text in enumerate(outputs, 1))
                outcome.violations.append(f"{changed.count(True)} of the two runs renewed the certificate ({said})")
            if not any("locked" in text.lower() for text in outputs):
                outcome.violations.append("neither run reported the other's lock")
            outcome.code = max(process.returncode for process in processes)
            outcome.violations += violations(before, list(seen.get(host.state_path, [])))
            record = directory / "rerun.json"
            outcome.rerun_code, output = exbe(config, "renew", "--server", HOST, "--json", str(record))
            outcome.why_not = converged("healthy", outcome.rerun_code, output, record, before,
                                        HostState.load(host.state_path))
            outcome.converged = not outcome.why_not
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def cancelled_fleet(workdir: Path, delay_s: float, *, hosts: int = 6) -> Outcome:
    """A fleet `renew` (latency 40 ms, two servers at a time) sent SIGINT ``delay_s`` after its first request reached
    a server (not after its start: on a loaded agent start-up alone can take longer): it exits 130 with
    complete JUnit and JSON, every server either finished or marked cancelled, no invariant broken on any host; then
    a rerun converges on every host."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="cancelled-", dir=workdir))
    outcome = Outcome(case=f"cancelled fleet run (SIGINT after {delay_s:.1f} s)", code=0)
    plan = [(f"exch{n + 1:02d}", MIXED_SCENARIOS[n % len(MIXED_SCENARIOS)]) for n in range(hosts)]
    fleet = Fleet(directory / "sandbox", plan, latency_ms=40, username=USERNAME, password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            befores = {name: HostState.load(fleet.host(name).state_path) for name, _ in plan}
            config = write_config(fleet, directory / "exbe.yaml")
            record, junit = directory / "r.json", directory / "r.xml"
            process = exbe_process(config, *COMMAND, "--all", "--json", str(record), "--junit", str(junit),
                                   env={"EXBE_CONCURRENCY": "2"})
            while process.poll() is None and not any(fleet.host(name).total_requests("winrm") for name, _ in plan):
                time.sleep(0.01)
            time.sleep(delay_s)
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=300)[0]
            outcome.code = process.returncode
            outcome.violations += cancelled_reports(process.returncode, output, record, junit, [n for n, _ in plan])
            for name, _ in plan:
                outcome.violations += [f"{name}: {v}" for v in
                                       violations(befores[name], list(seen.get(fleet.host(name).state_path, [])))]
            rerun = directory / "rerun.json"
            outcome.rerun_code, output = exbe(config, *COMMAND, "--all", "--json", str(rerun))
            not_fine = [f"{name}: {'; '.join(broken(befores[name], HostState.load(fleet.host(name).state_path)))}"
                        for name, _ in plan if broken(befores[name], HostState.load(fleet.host(name).state_path))]
            if outcome.rerun_code != 0 or not_fine:
                outcome.converged = False
                outcome.why_not = f"rerun exit {outcome.rerun_code}; {'; '.join(not_fine) or last_line(output)}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def cancelled_reports(code: int, output: str, record: Path, junit: Path, names: list[str]) -> list[str]:
    """What is wrong with a cancelled run's exit code, line and reports."""
    found = []
    if code != 130:
        found.append(f"exit {code} after SIGINT, not 130")
    if "exbe: cancelled (exbe received SIGINT)" not in output:
        found.append("no line saying the run was cancelled")
    try:
        servers = {s["server"]: s for s in json.loads(record.read_text(encoding="utf-8"))["servers"]}
        suites = {suite.name for suite in junitparser.JUnitXml.fromfile(str(junit))}
    except (OSError, ValueError, junitparser.JUnitXmlError) as exc:
        return [*found, f"reports unreadable: {exc}"]
    if sorted(servers) != sorted(names):
        found.append(f"the JSON record lists {sorted(servers)}, not every server")
    if len(suites) != len(names):
        found.append(f"the JUnit file has {len(suites)} suites for {len(names)} servers")
    for name, server in servers.items():
        finished = server["error"] is None and any(s["step"] == "verify" for s in server["steps"])
        if not finished and server.get("error_kind") != "cancelled":
            found.append(f"{name} neither finished nor is marked cancelled ({server['error']})")
    return found


# -- issue 27: interruptions at the worst instants ------------------------------------------------------------------
#: The first WinRM request after New-ExchangeCertificate answered, in COMMAND with --force on a server whose 444
#: carries nothing (3 authentication, Create, Receive, the lock + facts pipeline's Command and Receive; then the
#: trust + bind pipeline's Command).
FIRST_AFTER_RENEWAL = 8
#: Where a server goes silent against its deadline (hang_from=winrm:N): the first pipeline's Command (before the
#: lock is taken), its Receive (the lock taken, its answer lost), the trust + bind pipeline's Receive (changed).
HANG_POINTS = (6, 7, 9)
#: The timeouts of a hung-server case: read_timeout 4 s, server_timeout 12 s; the bound is 12 + min(30, 4) s.
HANG_DEFAULTS = {"connect_timeout": 2, "operation_timeout": 2, "read_timeout": 4, "server_timeout": 12}
#: What the agent may add to the documented bound on a loaded machine (thread start, reports).
HANG_SLACK_S = 20.0
EMPTY_444 = ("binding_empty", "binding_removed_by_update")


def unlock_then_rerun(outcome: Outcome, config: Path, directory: Path, scenario: str, before: HostState,
                      host: SandboxHost, output: str, *, killed: bool = False) -> None:
    """The rerun after an interruption. When a lock the interrupted run left refuses it, that run's ``output`` must
    have named the exact command that removes it (`exbe unlock --server S --run R`, R the holder the refusal names;
    a ``killed`` run says nothing, and the refusal's own advice is used); that command, then the rerun again. Then
    a third run, which must change nothing."""
    host.faults = Faults()
    record = directory / "rerun.json"
    outcome.rerun_code, rerun_output = exbe(config, *COMMAND, "--server", HOST, "--json", str(record))
    if refused_by_lock(rerun_output):
        outcome.lock_refused = True
        holder = re.search(r"locked by run ([0-9a-f]+)", rerun_output)
        said = re.search(r"`exbe unlock --server \S+ --run ([0-9a-f]+)`", rerun_output if killed else output)
        if holder is None or said is None or said.group(1) != holder.group(1):
            outcome.violations.append("the lock left on the server was not named with the command that removes it: "
                                      f"{last_line(output)}")
        unlock_code, _ = exbe(config, "unlock", "--server", HOST, "--run", holder.group(1) if holder else "")
        outcome.rerun_code, rerun_output = exbe(config, *COMMAND, "--server", HOST, "--json", str(record))
        outcome.extra_runs += 2
        if unlock_code != 0:
            outcome.violations.append(f"exbe unlock --run {holder.group(1) if holder else None} exited {unlock_code}")
    outcome.why_not = converged(scenario, outcome.rerun_code, rerun_output, record, before,
                                HostState.load(host.state_path))
    outcome.converged = not outcome.why_not
    if outcome.converged:
        third_run(outcome, config, directory, *COMMAND, "--server", HOST)


def killed_after_renewal(workdir: Path, scenario: str) -> Outcome:
    """A real exbe process killed (SIGKILL: nothing of it runs again) between New-ExchangeCertificate's answer and
    the next WinRM step, on a server whose 444 carries nothing: the host holds that step's request unanswered and
    the process dies there. The next run is refused by the dead run's lock, which its output named; after
    `exbe unlock --run R` it binds the certificate the killed run made (the journal's "My since the lock"), with no
    human choosing between the two candidates."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="killed-", dir=workdir))
    outcome = Outcome(case=f"{scenario} / killed between the Exchange renewal and the next step", code=0)
    fleet = Fleet(directory / "sandbox", [(HOST, scenario)],
                  faults={HOST: Faults.parse(f"hang_from=winrm:{FIRST_AFTER_RENEWAL}")},
                  username=USERNAME, password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            host = fleet.host(HOST)
            before = HostState.load(host.state_path)
            config = write_config(fleet, directory / "exbe.yaml")
            process = exbe_process(config, *COMMAND, "--force", "--server", HOST)
            deadline = time.monotonic() + 300
            while process.poll() is None and not host.request_counts().get("winrm", {}).get("hang"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            process.kill()
            output = process.communicate(timeout=60)[0]
            outcome.code = process.returncode
            made = [c.thumbprint for c in HostState.load(host.state_path).my
                    if c.thumbprint not in {m.thumbprint for m in before.my}]
            if len(made) != 1:
                outcome.violations.append(f"the kill did not land after the renewal: My gained {made}")
            unlock_then_rerun(outcome, config, directory, scenario, before, host, output, killed=True)
            if made and backend_hash(HostState.load(host.state_path)) != made[0]:
                outcome.converged = False
                outcome.why_not = (outcome.why_not or "") + f"; 444 is not on {made[0]}, the killed run's certificate"
            outcome.violations += violations(before, list(seen.get(host.state_path, [])))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def hung_server(workdir: Path, scenario: str, request: int) -> Outcome:
    """The server stops answering from WinRM request ``request`` on (``hang_from``): the run ends within
    server_timeout + min(30 s, read_timeout) (+ :data:`HANG_SLACK_S`), its output names server_timeout, a lock it
    left is named with its exact unlock command; once the server answers again the rerun converges."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="hung-", dir=workdir))
    outcome = Outcome(case=f"{scenario} / silent from winrm request {request} (server_timeout 12 s)", code=0)
    fleet = Fleet(directory / "sandbox", [(HOST, scenario)], faults={HOST: Faults.parse(f"hang_from=winrm:{request}")},
                  username=USERNAME, password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            host = fleet.host(HOST)
            before = HostState.load(host.state_path)
            config = directory / "exbe.yaml"
            config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory(), "defaults": HANG_DEFAULTS}}),
                              encoding="utf-8")
            first = directory / "first.json"
            outcome.code, output = exbe(config, *COMMAND, "--server", HOST, "--json", str(first))
            took = time.monotonic() - started
            bound = HANG_DEFAULTS["server_timeout"] + min(30, HANG_DEFAULTS["read_timeout"])
            if took > bound + HANG_SLACK_S:
                outcome.violations.append(f"the silent server held the run {took:.1f} s, bound {bound} s")
            if "server_timeout" not in output:
                outcome.misleading = f"exit {outcome.code} without naming server_timeout: {last_line(output)}"
            else:
                outcome.misleading = misleading_exit(outcome.code, first, [])
            # the server answers again: the rerun and the third run get the default server_timeout
            unlock_then_rerun(outcome, write_config(fleet, config), directory, scenario, before, host, output)
            outcome.violations += violations(before, list(seen.get(host.state_path, [])))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def signalled(workdir: Path, when: str, delay_s: float = 0.0) -> Outcome:
    """SIGINT to a real `exbe renew` at start-up (``delay_s`` after its handlers are installed, the first thing
    exbe does -- before that the interpreter itself is starting, and a SIGINT there is Python's: a traceback from
    its ``site`` import, exit 1 -- so before, while or just after it contacts the server) or at its end (the
    moment its server's lines are printed: the reports are being written): exit 130, whole reports when the run
    got that far, no invariant broken, and the rerun converges."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="signalled-", dir=workdir))
    outcome = Outcome(case=f"SIGINT at {when}" + (f" (handlers + {delay_s:.1f} s)" if when == "start" else ""), code=0)
    fleet = Fleet(directory / "sandbox", [(HOST, "backend_expiring")], username=USERNAME, password=PASSWORD)
    try:
        with fleet, saved_states() as seen:
            host = fleet.host(HOST)
            before = HostState.load(host.state_path)
            config = write_config(fleet, directory / "exbe.yaml")
            record, junit = directory / "r.json", directory / "r.xml"
            process = exbe_process(config, *COMMAND, "--server", HOST, "--json", str(record), "--junit", str(junit))
            assert process.stdout is not None
            lines: list[str] = []
            if when == "start":
                wait_for_handlers(process)
                time.sleep(delay_s)
            else:
                for line in process.stdout:  # the server's lines come together once it finished
                    lines.append(line)
                    if re.match(rf"{HOST}\s+verify\s", line):
                        break
            finished_first = process.poll() is not None  # an idle machine can finish the run within the delay
            process.send_signal(signal.SIGINT)
            output = "".join(lines) + process.communicate(timeout=300)[0]
            outcome.code = process.returncode
            if finished_first:
                outcome.case += ": the run had ended before the signal"
                outcome.misleading = misleading_exit(outcome.code, record, [])
            elif outcome.code != 130:
                outcome.misleading = f"exit {outcome.code} after SIGINT, not 130: {last_line(output)}"
            if "Traceback" in output:
                outcome.violations.append("a traceback: " + output[output.index("Traceback"):][:300])
            if when == "end":
                outcome.violations += [v for v in cancelled_reports(outcome.code, output, record, junit, [HOST])
                                       if "exit" not in v and "no line saying" not in v]
            outcome.violations += violations(before, list(seen.get(host.state_path, [])))
            unlock_then_rerun(outcome, config, directory, "backend_expiring", before, host, output)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def issue27_cases(workdir: Path) -> Iterator[Outcome]:
    """Every interruption of issue 27 the grid does not cover (its grid holds the lost first answers -- drop and
    HTTP 500 at every request index, ``drop_in_step=lock`` -- and every single 500 on a Receive)."""
    for scenario in EMPTY_444:
        yield killed_after_renewal(workdir, scenario)
    for request in HANG_POINTS:
        yield hung_server(workdir, "backend_expiring", request)
    yield hung_server(workdir, "binding_empty", FIRST_AFTER_RENEWAL + 1)
    for delay in (0.0, 0.3, 0.8, 1.5):
        yield signalled(workdir, "start", delay)
    for _ in range(2):
        yield signalled(workdir, "end")


# -- the full grid ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", help="only this scenario (repeatable; default: all)")
    parser.add_argument("--drop-stride", type=int, default=1, help="drop at every n-th request index (default 1)")
    parser.add_argument("--quiet", action="store_true", help="print the figures only, not each case")
    parser.add_argument("--no-grid", action="store_true", help="only the cases outside the grid (concurrent "
                        "renews, cancelled fleets, issue 27's interruptions)")
    args = parser.parse_args(argv)

    def report(outcome: Outcome) -> None:
        if not args.quiet:
            mark = "ok" if not (outcome.violations or outcome.misleading or outcome.third_changed) \
                and outcome.converged else "BAD"
            notes = [f"{len(outcome.violations)} violation(s)" if outcome.violations else "",
                     "misleading exit" if outcome.misleading else "", "not converged" if not outcome.converged
                     else "", "third run changed" if outcome.third_changed else "",
                     "rerun refused by a lock" if outcome.lock_refused else ""]
            print(f"{mark:3} {outcome.seconds:5.1f}s exit {outcome.code}/{outcome.rerun_code}/{outcome.third_code}  "
                  f"{outcome.case}" + "".join(f" [{note}]" for note in notes if note), flush=True)

    with tempfile.TemporaryDirectory(prefix="exbe-fault-matrix-") as work, credentials():
        workdir = Path(work)
        started = time.monotonic()
        totals = Totals()
        for extra in itertools.chain(issue27_cases(workdir), (concurrent_renews(workdir, n) for n in range(3)),
                                     (cancelled_fleet(workdir, delay) for delay in (0.5, 1.5, 3.0))):
            totals.outcomes.append(extra)
            report(extra)
        if not args.no_grid:
            totals.outcomes += grid(workdir, args.scenario or scenario_names(), drop_stride=args.drop_stride,
                                    fail_stride=args.drop_stride, report=report).outcomes
        totals.seconds = time.monotonic() - started
    print(totals.text())
    return 1 if totals.violations or totals.non_converging or totals.misleading or totals.third_changed else 0


if __name__ == "__main__":
    sys.exit(main())
