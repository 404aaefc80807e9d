"""exbe's lock on the server and the journal in it, end to end on the sandbox: two runs never both change a server,
an interrupted run is reported by the next one, which converges, and `exbe unlock` removes a lock an admin names."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exbe.errors import ConnectionFailed
from exbe.facts import iso
from exbe.render import TEMPLATE_DIR, render_step
from exbe.sandbox import windows
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, FRONTEND_SITE, LOOPBACK_BINDING, utcnow
from exbe.sandbox.steps import LAST_RUN_FILE, LOCK_FILE
from exbe.steps import lock
from tests import pwsh
from tests.test_templates_syntax import _allowed_parameters

from . import sandbox_probe as probe
from .conftest import PASSWORD, USERNAME
from .exbe_cli import write_config
from .fault_matrix import released_together

DEAD_RUN = "dead00000001"
LOCKED = (r"locked by run (?P<run>\w+) \(renew\) from agent \S+ since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; "
          r"expires at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")



def backend_candidates(fleet: Fleet) -> set[str]:
    return {c["thumbprint"] for c in probe.facts(fleet)["certificates"]
            if c["friendly_name"] == "Microsoft Exchange" and c["self_signed"]}


def files(fleet: Fleet) -> dict[str, dict]:
    """%ProgramData%\\exbe on the host, read from its state directly (not through exbe)."""
    return {name: json.loads(f["text"]) for name, f in fleet.host("exch01").snapshot()["exbe_files"].items()}


def steps_of(record: Path) -> list[dict]:
    return json.loads(record.read_text())["servers"][0]["steps"]


def plant_interrupted_run(fleet: Fleet, *, expired: bool, bind_half_done: bool) -> str:
    """What a run killed with -9 leaves: its lock record (expired or not), its journal, and its new certificate N in
    My; with ``bind_half_done`` killed inside its bind after *:444: moved to N, the loopback still on the old one."""
    host = fleet.host("exch01")
    with host.lock:
        state = host.state
        old = state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash
        source = state.find("My", old)
        my_before = [c.thumbprint for c in state.my]
        new = windows.new_self_signed_clone(state, source, provider="Microsoft RSA SChannel Cryptographic Provider",
                                            key_length=2048, hash_algorithm="sha256", validity_years=5)
        started = utcnow() - datetime.timedelta(minutes=50)
        journal = [{"at": iso(started), "step": "lock", "phase": "begin", "intent": "take the lock for renew",
                    "replaces": {"my": my_before}}]
        if bind_half_done:
            state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash = new.thumbprint
            journal.append({"at": iso(started), "step": "bind", "phase": "begin",
                            "intent": f"bind {new.thumbprint} on {BACKEND_SITE} {BACKEND_BINDING}",
                            "replaces": {"backend": old, "loopback": old}})
        expires = utcnow() + datetime.timedelta(minutes=-5 if expired else 25)
        record = {"exbe_lock": 1, "run_id": DEAD_RUN, "agent": "agent-gone", "task": "renew",
                  "started_at": iso(started), "expires_at": iso(expires), "journal": journal, "took_over": None,
                  "ended": None}
        state.exbe_files[LOCK_FILE] = {"text": json.dumps(record), "written_at": iso(started)}
        host.save()
    return new.thumbprint


# -- two runs at once ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("skew_s", [0.0, 1.0], ids=["same-start", "second-starts-1s-later"])
def test_two_simultaneous_forced_renewals_change_the_server_once_and_the_other_reports_the_lock(start_fleet, tmp_path,
                                                                                                skew_s):
    # both runs' lock requests reach the server together, however far apart the two processes start (a run holds
    # the lock about 1 s here: without released_together a 1 s skew made two runs one after the other)
    fleet = start_fleet([("exch01", "healthy")], latency_ms=150)
    before = backend_candidates(fleet)
    config = write_config(fleet, tmp_path / "exbe.yaml")
    env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD}

    def start(i: int) -> subprocess.Popen[str]:
        time.sleep(skew_s if i == 2 else 0.0)
        return subprocess.Popen([sys.executable, "-m", "exbe", "-f", str(config), "renew", "--server", "exch01",
                                 "--force", "--json", str(tmp_path / f"run{i}.json")], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with released_together(fleet.host("exch01"), 2):
        runs = [start(i) for i in (1, 2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], outputs

    loser = next(i for i, run in enumerate(runs, 1) if run.returncode == 1)
    lock_step = steps_of(tmp_path / f"run{loser}.json")[0]
    assert lock_step["step"] == "lock" and lock_step["status"] == "failed"
    assert re.match(LOCKED, lock_step["message"]), lock_step["message"]
    assert not any(s["changed"] for s in steps_of(tmp_path / f"run{loser}.json")), "the loser changed nothing"

    after = probe.facts(fleet)
    created = backend_candidates(fleet) - before
    assert len(created) == 1, f"exactly one new certificate, not {created}"
    assert probe.binding(after, BACKEND_SITE, BACKEND_BINDING) == probe.binding(after, FRONTEND_SITE,
                                                                                 LOOPBACK_BINDING) == created.pop(), \
        "no split binding: *:444: and 127.0.0.1:443: carry the one new certificate"
    assert set(files(fleet)) == {LAST_RUN_FILE}, "the winner released its lock"


def test_a_run_whose_exchange_endpoint_fails_after_the_lock_was_taken_releases_it(start_fleet, exbe, monkeypatch):
    """The preflight pipeline takes the lock while Exchange is read beside it: a failure there that ends the run
    (TLS validation) must not leave the server locked for the TTL."""
    from exbe.server_run import ServerJob

    fleet = start_fleet([("exch01", "healthy")])

    def tls_refused(self):
        raise ConnectionFailed(self.server.name, self.server.name, 443, "tls_validation", detail="self-signed")

    monkeypatch.setattr(ServerJob, "read_exchange", tls_refused)
    result = exbe(fleet, "renew", "--server", "exch01")
    assert result.code != 0
    assert set(files(fleet)) == {LAST_RUN_FILE} and files(fleet)[LAST_RUN_FILE]["ended"]["how"] == "released"
    monkeypatch.undo()
    assert exbe(fleet, "renew", "--server", "exch01").code == 0, "the next run is not blocked"


# -- interrupted runs ------------------------------------------------------------------------------------------------
def test_a_run_killed_inside_its_bind_is_reported_first_and_the_next_run_finishes_the_bind(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    new = plant_interrupted_run(fleet, expired=True, bind_half_done=True)
    split = probe.facts(fleet)
    assert probe.binding(split, BACKEND_SITE, BACKEND_BINDING) != probe.binding(split, FRONTEND_SITE, LOOPBACK_BINDING)
    mine_before = backend_candidates(fleet)

    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err

    first = steps_of(record)[0]
    assert first["step"] == "lock" and first["status"] == "ok"
    warning = first["warnings"][0]
    assert warning.startswith(f"an interrupted exbe run was found: run {DEAD_RUN} (renew) from agent agent-gone")
    assert "last step bind (begun at" in warning and new in warning
    assert any("took over its expired lock" in w for w in first["warnings"])

    after = probe.facts(fleet)
    assert probe.binding(after, BACKEND_SITE, BACKEND_BINDING) == new
    assert probe.binding(after, FRONTEND_SITE, LOOPBACK_BINDING) == new, "the interrupted bind was finished"
    assert backend_candidates(fleet) == mine_before, "no further certificate"
    last = files(fleet)[LAST_RUN_FILE]
    assert last["took_over"]["run_id"] == DEAD_RUN and last["ended"]["how"] == "released"
    assert [(e["step"], e["phase"]) for e in last["journal"] if e["step"] == "bind"] == [("bind", "begin"),
                                                                                        ("bind", "end")]


def test_a_run_killed_between_creating_and_binding_is_reported_and_its_certificate_reused(start_fleet, exbe,
                                                                                          tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")])
    new = plant_interrupted_run(fleet, expired=True, bind_half_done=False)

    verify = tmp_path / "verify.json"
    assert exbe(fleet, "verify", "--server", "exch01", "--json", str(verify)).code == 1  # expiring: fails anyway
    check = next(c for s in steps_of(verify) for c in s.get("checks", []) if c["id"] == "interrupted_run")
    assert check["status"] == "warn"
    assert f"run {DEAD_RUN} (renew)" in check["message"] and "no step begun after taking the lock" in check["message"]
    assert f"it left {new} in LocalMachine\\My, not bound" in check["message"]
    assert LOCK_FILE in files(fleet) and files(fleet)[LOCK_FILE]["run_id"] == DEAD_RUN, "verify never locks"

    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err
    assert steps_of(record)[0]["warnings"][0].startswith(f"an interrupted exbe run was found: run {DEAD_RUN}")
    assert probe.binding(probe.facts(fleet), BACKEND_SITE, BACKEND_BINDING) == new, "its staged certificate reused"
    again = tmp_path / "again.json"
    assert exbe(fleet, "verify", "--server", "exch01", "--json", str(again)).code == 0
    check = next(c for s in steps_of(again) for c in s.get("checks", []) if c["id"] == "interrupted_run")
    assert check["status"] == "pass"


def test_a_connection_lost_inside_the_bind_fails_the_server_but_releases_the_lock_with_the_journal(start_fleet, exbe,
                                                                                                    tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(drop_in_step="bind")})
    result = exbe(fleet, "renew", "--server", "exch01")
    assert result.code == 1
    kept = files(fleet)
    assert LOCK_FILE not in kept, "released on a new connection at the end of the run"
    # as the journal reads (a note sent again with the release, its pipeline's answer lost, counts once)
    journal = lock.LockRecord.parse(kept[LAST_RUN_FILE]).journal
    assert [(e["step"], e["phase"]) for e in journal][-2:] == [("bind", "begin"), ("bind", "end")]
    fleet.host("exch01").faults = Faults()
    assert exbe(fleet, "renew", "--server", "exch01").code == 0, "the next run converges"


# -- a held lock -----------------------------------------------------------------------------------------------------
def test_a_held_lock_stops_a_changing_task_before_any_change_and_read_only_tasks_report_it(start_fleet, exbe,
                                                                                           tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring"), ("exch02", "backend_expiring")])
    plant_interrupted_run(fleet, expired=False, bind_half_done=False)
    state_before = fleet.host("exch01").snapshot()

    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--all", "--json", str(record))
    assert result.code == 1
    servers = {s["server"]: s for s in json.loads(record.read_text())["servers"]}
    lock_step = servers["exch01"]["steps"][0]
    assert lock_step["status"] == "failed"
    assert re.match(LOCKED, lock_step["message"]).group("run") == DEAD_RUN
    assert fleet.host("exch01").snapshot() == state_before, "nothing changed on the locked server"
    assert servers["exch02"]["steps"][-1]["status"] == "ok" and not any(
        s["status"] == "failed" for s in servers["exch02"]["steps"]), "the other server went on"

    verify = tmp_path / "verify.json"
    exbe(fleet, "verify", "--server", "exch01", "--json", str(verify))
    check = next(c for s in steps_of(verify) for c in s.get("checks", []) if c["id"] == "interrupted_run")
    assert check["status"] == "warn" and f"locked by run {DEAD_RUN} (renew)" in check["message"]
    dry = tmp_path / "dry.json"
    exbe(fleet, "renew", "--server", "exch01", "--dry-run", "--json", str(dry))
    assert any(f"locked by run {DEAD_RUN}" in w for w in steps_of(dry)[0]["warnings"]), "a dry run reports it"
    assert fleet.host("exch01").snapshot() == state_before


def test_unlock_shows_the_lock_and_removes_only_what_the_admin_names(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    new = plant_interrupted_run(fleet, expired=False, bind_half_done=True)

    refused = exbe(fleet, "unlock", "--server", "exch01")
    assert refused.code == 1
    assert f"not removed: locked by run {DEAD_RUN} (renew)" in refused.out
    assert f"--run {DEAD_RUN}" in refused.out
    assert exbe(fleet, "unlock", "--server", "exch01", "--run", "someoneelse1").code == 1
    assert files(fleet)[LOCK_FILE]["run_id"] == DEAD_RUN

    removed = exbe(fleet, "unlock", "--server", "exch01", "--run", DEAD_RUN)
    assert removed.code == 0, removed.out
    assert f"removed the lock of run {DEAD_RUN} (renew)" in removed.out and "last step: bind (begun" in removed.out
    assert set(files(fleet)) == {LAST_RUN_FILE} and files(fleet)[LAST_RUN_FILE]["ended"]["how"] == "removed"
    assert exbe(fleet, "unlock", "--server", "exch01").code == 0, "no lock: nothing to do"

    record = tmp_path / "r.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--json", str(record)).code == 0
    assert steps_of(record)[0]["warnings"][0].startswith(f"an interrupted exbe run was found: run {DEAD_RUN}")
    assert probe.binding(probe.facts(fleet), FRONTEND_SITE, LOOPBACK_BINDING) == new


def test_unlock_yes_removes_whatever_lock_is_there(start_fleet, exbe):
    fleet = start_fleet([("exch01", "healthy")])
    plant_interrupted_run(fleet, expired=False, bind_half_done=False)
    result = exbe(fleet, "unlock", "--server", "exch01", "--yes")
    assert result.code == 0 and f"removed the lock of run {DEAD_RUN}" in result.out
    assert LOCK_FILE not in files(fleet)


# -- round trips -----------------------------------------------------------------------------------------------------
def test_the_lock_costs_no_round_trip_in_the_renew_chain(start_fleet, exbe):
    fleet = start_fleet([("exch01", "backend_expiring")])
    host = fleet.host("exch01")
    host.reset_counts()
    assert exbe(fleet, "renew", "--server", "exch01").code == 0
    assert host.total_requests("winrm") == 10 and host.total_requests("exchange") == 10, host.request_counts()
    assert set(files(fleet)) == {LAST_RUN_FILE}, "taken in the facts read's pipeline, released in the bind's"


# -- the templates ---------------------------------------------------------------------------------------------------
LOCK_VARIANTS = {f"lock-{action}": render_step("lock", lock.request(action, DEAD_RUN, "agent01", "renew"))
                 for action in lock.ACTIONS}
LOCK_VARIANTS["trust-under-lock"] = render_step("trust", {"thumbprint": "AB" * 20, "dry_run": False,
                                                          "lock": lock.context(DEAD_RUN)})


@pytest.mark.parametrize("name", sorted(LOCK_VARIANTS))
def test_the_lock_scripts_parse_and_call_only_documented_commands(name):
    text = LOCK_VARIANTS[name]
    assert pwsh.syntax_errors(text) == [] and pwsh.ps7_only(text) == [] and pwsh.newer_than_ps4(text) == []
    allowed = _allowed_parameters(text)
    assert [c.name for c in pwsh.commands(text) if c.name.lower() not in allowed] == []
    assert [f"{c.name} -{p}" for c in pwsh.commands(text) for p in c.parameters
            if p.lower() not in allowed.get(c.name.lower(), set())] == []


def test_the_lock_is_created_with_createnew_and_read_and_written_only_under_an_exclusive_handle():
    source = (TEMPLATE_DIR / "_lock.ps1.j2").read_text(encoding="utf-8")
    assert "[System.IO.File]::Open($path, $Mode, [System.IO.FileAccess]::ReadWrite, [System.IO.FileShare]::None)" \
        in source
    assert "Open-ExbeLockStream -Mode ([System.IO.FileMode]::CreateNew)" in LOCK_VARIANTS["lock-acquire"]


def test_the_exbe_directory_is_created_for_administrators_and_system_only_and_protected_from_inheritance():
    script = LOCK_VARIANTS["lock-acquire"]
    create = script.index("[void][System.IO.Directory]::CreateDirectory($path, $security)")
    assert script.index("$security.SetAccessRuleProtection($true, $false)") < create
    assert "$owners = @('S-1-5-32-544', 'S-1-5-18')" in script
    assert script.index("Initialize-ExbeLockDirectory\n") > script.index("function Initialize-ExbeLockDirectory")
    assert "CreateDirectory($env:ProgramData" not in script, "never with the ACL ProgramData passes on"


def test_an_exbe_directory_others_may_write_to_is_a_warning_of_the_run_not_a_failure(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    host = fleet.host("exch01")
    with host.lock:
        host.state.exbe_directory_acl = ["S-1-5-32-544", "S-1-5-18", "S-1-5-32-545"]  # BUILTIN\Users
        host.save()
    record = tmp_path / "r.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--json", str(record)).code == 0
    lock_step = steps_of(record)[0]
    assert lock_step["step"] == "lock" and lock_step["status"] == "ok"
    assert any(w.startswith("C:\\ProgramData\\exbe also grants access to S-1-5-32-545: a non-admin may be able "
                            "to create or replace exbe's lock there") for w in lock_step["warnings"]), lock_step


#: The first statement of each mutating step that changes the server.
CHANGES = {"clone": "New-SelfSignedCertificate -CloneCert $source[0]", "trust": "$store.Add($public)",
           "bind": "$state.backend.AddSslCertificate($thumbprint, 'my')", "restart": "iisreset.exe /noforce",
           "cleanup": "Remove-Item -LiteralPath $certificate.PSPath -DeleteKey"}


@pytest.mark.parametrize("step", sorted(CHANGES))
def test_each_mutating_step_checks_the_lock_and_journals_before_its_change_and_its_result_after(step):
    source = (TEMPLATE_DIR / f"{step}.ps1.j2").read_text(encoding="utf-8")
    enter = source.index(f"Enter-ExbeJournal -Doc $Doc -Step '{step}'")
    assert enter < source.index(CHANGES[step])
    assert "if ($refusal) {" in source[enter:enter + 400], "a lock that is not this run's: nothing changes"
    assert source.rstrip().splitlines()[-2].strip().startswith("return (Complete-ExbeJournal -Doc $Doc -Outcome")


def test_a_restart_no_one_expected_takes_the_lock_again_in_its_own_pipeline(start_fleet, exbe, tmp_path, monkeypatch):
    from exbe.jobs.backend import BackendJob

    fleet = start_fleet([("exch01", "healthy")])
    host = fleet.host("exch01")
    real = BackendJob.trust_and_bind

    def w3svc_stops_meanwhile(self, *args, **kwargs):  # after preflight read it running: no restart expected
        with host.lock:
            host.state.services["W3SVC"] = "Stopped"
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BackendJob, "trust_and_bind", w3svc_stops_meanwhile)
    host.reset_counts()
    record = tmp_path / "r.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record)).code == 0
    restart = next(s for s in steps_of(record) if s["step"] == "restart")
    assert restart["status"] == "changed"
    assert set(files(fleet)) == {LAST_RUN_FILE}
    journal = files(fleet)[LAST_RUN_FILE]["journal"]
    assert [(e["step"], e["phase"]) for e in journal] == [("lock", "begin"), ("restart", "begin"), ("restart", "end")]
    assert host.total_requests("winrm") == 14, "the restart's pipeline carries the lock: no extra round trip"


# -- a lost answer to the pipeline that takes the lock (issue 27, item 1) -------------------------------------------
LOST_FIRST_ANSWER = ["drop_in_step=lock", *(f"fail_request=winrm:{n}" for n in range(1, 9)),
                     *(f"drop_request=winrm:{n}" for n in range(1, 9))]


@pytest.mark.parametrize("fault", LOST_FIRST_ANSWER)
def test_a_lost_answer_to_the_first_pipeline_leaves_no_lock_or_names_the_exact_unlock_command(start_fleet, exbe,
                                                                                              tmp_path, fault):
    fleet = start_fleet([("exch01", "backend_expiring")])
    fleet.host("exch01").faults = Faults.parse(fault)
    record = tmp_path / "r.json"
    exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    fleet.host("exch01").faults = Faults()
    server = json.loads(record.read_text())["servers"][0]
    left = files(fleet).get(LOCK_FILE)
    if left is not None:
        said = " ".join([*server["warnings"], *(w for s in server["steps"] for w in s["warnings"])])
        assert f"`exbe unlock --server exch01 --run {left['run_id']}`" in said, (fault, server)
        assert exbe(fleet, "unlock", "--server", "exch01", "--run", left["run_id"]).code == 0
    rerun = exbe(fleet, "renew", "--server", "exch01")
    assert rerun.code == 0, (fault, rerun.out)
