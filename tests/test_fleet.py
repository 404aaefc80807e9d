"""One server's trouble stays that server's: any exception in its work fails that server with one line naming it,
and every other server completes and gets its report (issue 12, item 3)."""

from __future__ import annotations

import json
import threading

import junitparser
import pytest

from exbe import fleet as fleet_module
from exbe import jobs, server_run
from exbe.config import Credentials, load_inventory
from exbe.fleet import Fleetwide, RunOptions, fail_unexpectedly, unexpected_message
from exbe.jobs.backend import BackendJob
from exbe.model import ServerRun, Settings, StepResult
from exbe.server_run import ServerJob
from exbe.transport import Session

HOSTS = [("exch01", "backend_expiring"), ("exch02", "backend_expiring"), ("exch03", "healthy")]



@pytest.fixture
def fleet_runs(monkeypatch):
    """What ``run_fleet`` returned to the command line, captured on the way."""
    returned: list[list[ServerRun]] = []
    real = jobs.run_fleet

    def capture(*args, **kwargs):
        runs = real(*args, **kwargs)
        returned.append(runs)
        return runs

    monkeypatch.setattr(jobs, "run_fleet", capture)
    return returned


def renew_all(fleet, exbe, tmp_path, *extra):
    record, junit = tmp_path / "r.json", tmp_path / "r.xml"
    result = exbe(fleet, "renew", "--all", "--json", str(record), "--junit", str(junit), *extra)
    servers = {s["server"]: s for s in json.loads(record.read_text())["servers"]}
    suites = {s.name for s in junitparser.JUnitXml.fromfile(str(junit))}
    return result, servers, suites


def steps_of(server: dict) -> dict[str, dict]:
    return {s["step"]: s for s in server["steps"]}


def assert_the_others_completed(servers: dict, broken: str) -> None:
    """Every server but ``broken`` ended verified; the expiring ones among them were renewed."""
    for name, server in servers.items():
        if name == broken:
            continue
        assert not server["failed"], (name, server["steps"])
        assert steps_of(server)["verify"]["status"] == "ok", name
        if dict(HOSTS)[name] == "backend_expiring":
            assert server["new_thumbprint"] not in (None, server["old_thumbprint"]), f"{name} was renewed"


class _Broken(Exception):
    pass


def test_an_exception_raised_inside_one_servers_session_fails_only_that_server(start_fleet, exbe, tmp_path,
                                                                                monkeypatch, fleet_runs):
    fleet = start_fleet(HOSTS)

    class OneBrokenSession(Session):
        def run_scripts(self, scripts, **options):
            if self.server.name == "exch02":
                raise ValueError("Invalid header value b'exch\\x0102'\nsecond line")
            return super().run_scripts(scripts, **options)

    monkeypatch.setattr(server_run, "Session", OneBrokenSession)
    result, servers, suites = renew_all(fleet, exbe, tmp_path)

    assert result.code == 1
    runs = fleet_runs[0]
    assert [r.server for r in runs] == ["exch01", "exch02", "exch03"], "a ServerRun for every server, in order"
    assert set(servers) == suites == {"exch01", "exch02", "exch03"}, "JSON and JUnit hold every server"
    broken = steps_of(servers["exch02"])
    assert broken["preflight"]["status"] == "failed"
    assert broken["preflight"]["message"] == \
        "unexpected error: ValueError: Invalid header value b'exch\\x0102' second line", "type and text, one line"
    assert servers["exch02"]["error"] == broken["preflight"]["message"]
    assert "renew" not in broken, "nothing after the failure runs on that server"
    assert_the_others_completed(servers, "exch02")
    assert "ValueError" in result.out


def test_a_bug_in_one_servers_chain_keeps_its_earlier_steps_and_fails_the_step_under_way(start_fleet, exbe, tmp_path,
                                                                                          monkeypatch, fleet_runs):
    fleet = start_fleet(HOSTS)
    real = ServerJob.scripts

    def scripts(self, planned, **options):
        if self.server.name == "exch01" and any(step == "bind" for step, _ in planned):
            raise KeyError("backend_binding")
        return real(self, planned, **options)

    monkeypatch.setattr(ServerJob, "scripts", scripts)
    result, servers, suites = renew_all(fleet, exbe, tmp_path)

    assert result.code == 1 and len(fleet_runs[0]) == 3 and len(suites) == 3
    steps = steps_of(servers["exch01"])
    assert steps["preflight"]["status"] == "ok" and steps["renew"]["status"] == "changed", "what happened is kept"
    assert steps["bind"] == {**steps["bind"], "status": "failed",
                             "message": "unexpected error: KeyError: 'backend_binding'"}
    assert "verify" not in steps
    assert_the_others_completed(servers, "exch01")


def test_a_server_whose_job_cannot_even_be_built_fails_at_connect_and_the_others_go_on(start_fleet, exbe, tmp_path,
                                                                                        monkeypatch, fleet_runs):
    fleet = start_fleet(HOSTS)

    def session(server, credentials):
        if server.name == "exch03":
            raise _Broken("no session for you")
        return Session(server, credentials)

    monkeypatch.setattr(server_run, "Session", session)
    result, servers, suites = renew_all(fleet, exbe, tmp_path)

    assert result.code == 1 and len(fleet_runs[0]) == 3 and len(suites) == 3
    run = next(r for r in fleet_runs[0] if r.server == "exch03")
    assert run.failed and run.host == "127.0.0.1" and run.started_at
    assert [(s.step, s.status, s.message) for s in run.steps] == \
        [("connect", "failed", "unexpected error: _Broken: no session for you")]
    assert_the_others_completed(servers, "exch03")


def test_a_control_character_in_a_server_name_is_refused_before_any_server_is_contacted(start_fleet, exbe, tmp_path):
    """The fault matrix's case (the name reached pypsrp, which raised inside one worker) cannot arise any more: the
    inventory is checked at load, the run is one line and exit 2, and no server saw a request."""
    fleet = start_fleet(HOSTS)
    inventory = fleet.inventory()
    inventory[1]["name"] = "exch\x0102"
    config = tmp_path / "control.json"
    config.write_text(json.dumps({"exbe": {"inventory": inventory, "defaults": {}}}), encoding="utf-8")
    for name, _ in HOSTS:
        fleet.host(name).reset_counts()
    result = exbe(fleet, "renew", "--all", "--json", str(tmp_path / "r.json"), config=config)

    assert result.code == 2
    assert "\\x01" in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "r.json").exists()
    assert all(fleet.host(name).total_requests("winrm") == 0 for name, _ in HOSTS)


def test_an_unexpected_error_reads_as_its_type_and_text_on_one_line():
    assert unexpected_message(ValueError("bad\r\n  host\tname")) == "unexpected error: ValueError: bad host name"
    assert unexpected_message(KeyError()) == "unexpected error: KeyError"


def test_a_progress_callback_that_raises_does_not_lose_the_failure():
    run = ServerRun(server="exch01", host="h", started_at="2026-01-01T00:00:00Z")
    seen = []

    def progress(*args):
        seen.append(args)
        raise OSError("stdout closed")

    fail_unexpectedly(run, "renew", RuntimeError("boom"), progress)
    assert run.failed and run.error == "unexpected error: RuntimeError: boom"
    assert [(s.step, s.status) for s in run.steps] == [("renew", "failed")]
    assert seen == [("exch01", "renew", "failed", "unexpected error: RuntimeError: boom")]


def test_keyboard_interrupt_is_not_swallowed_as_one_servers_failure(start_fleet, monkeypatch):
    """Cancellation belongs to the run, not to a server (issue 12 item 4): it is never turned into a failed step."""
    fleet = start_fleet([("exch01", "healthy")])
    server = load_inventory({"inventory": fleet.inventory()})[0]

    def interrupted(self, planned, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(ServerJob, "scripts", interrupted)
    job = BackendJob(server, "verify", Credentials(), Settings(), RunOptions(), lambda *a: None, Fleetwide())
    with pytest.raises(KeyboardInterrupt):
        job.execute()


def test_once_a_server_refuses_the_credentials_exbe_does_not_try_them_on_the_rest(start_fleet, exbe, tmp_path,
                                                                                   monkeypatch):
    fleet = start_fleet([(f"exch0{n}", "healthy") for n in range(1, 5)])
    monkeypatch.setenv("EXBE_CONCURRENCY", "1")
    for name in fleet.hosts:
        fleet.host(name).reset_counts()
    record = tmp_path / "r.json"
    result = exbe(fleet, "verify", "--all", "--json", str(record), password="Wr0ng-password")
    assert result.code == 1
    servers = {s["server"]: s for s in json.loads(record.read_text())["servers"]}
    assert "authentication failed" in servers["exch01"]["error"]
    for name in ("exch02", "exch03", "exch04"):
        assert servers[name]["error"].startswith("not attempted: exch01 refused the credentials")
        assert servers[name]["steps"][0]["status"] == "skipped"
        assert fleet.host(name).total_requests("winrm") == 0, "not one logon attempt on the other servers"


def test_keep_going_tries_every_server_with_refused_credentials(start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    monkeypatch.setenv("EXBE_CONCURRENCY", "1")
    record = tmp_path / "r.json"
    result = exbe(fleet, "verify", "--all", "--keep-going", "--json", str(record), password="Wr0ng-password")
    assert result.code == 1
    assert all("authentication failed" in s["error"] for s in json.loads(record.read_text())["servers"])


# -- the fleet runs any per-server job (exbe.fleet) -------------------------------------------------------------------
class _Job:
    """A job that is not the back-end chain: it records one step, or refuses the logon, or raises."""

    def __init__(self, server, outcome: str) -> None:
        self.run = fleet_module.new_run(server)
        self.stage = "connect"
        self.credentials_refused = outcome == "refused"
        self.outcome = outcome

    def execute(self) -> ServerRun:
        if self.outcome == "raises":
            self.stage = "publish"
            raise RuntimeError("boom")
        status = "failed" if self.outcome == "refused" else "ok"
        self.run.steps.append(StepResult(server=self.run.server, step="publish", status=status, message="done"))
        return self.run


def _servers(count: int):
    return load_inventory({"inventory": [f"exch0{n}" for n in range(1, count + 1)]})


def test_the_fleet_runs_any_job_and_isolates_a_server_whose_job_raises():
    outcomes = {"exch01": "ok", "exch02": "raises", "exch03": "ok"}
    runs = fleet_module.run_fleet(_servers(3), lambda server, gate: _Job(server, outcomes[server.name]), RunOptions(),
                                  lambda *a: None, concurrency=2)
    assert [(r.server, [(s.step, s.status) for s in r.steps]) for r in runs] == [
        ("exch01", [("publish", "ok")]), ("exch02", [("publish", "failed")]), ("exch03", [("publish", "ok")])]
    assert runs[1].error == "unexpected error: RuntimeError: boom"


def test_after_a_refused_logon_the_fleet_starts_no_further_server_unless_keep_going():
    started: list[str] = []

    def start(server, gate):
        started.append(server.name)
        return _Job(server, "refused")

    runs = fleet_module.run_fleet(_servers(3), start, RunOptions(), lambda *a: None, concurrency=1)
    assert started == ["exch01"]
    assert [r.error_kind for r in runs] == [None, "not_attempted", "not_attempted"]
    started.clear()
    fleet_module.run_fleet(_servers(3), start, RunOptions(keep_going=True), lambda *a: None, concurrency=1)
    assert started == ["exch01", "exch02", "exch03"]


def test_a_cancel_before_a_server_starts_leaves_it_untouched_and_reported_cancelled():
    options = RunOptions()
    options.cancel.request("exbe received SIGINT", 60.0)
    started: list[str] = []
    runs = fleet_module.run_fleet(_servers(2), lambda server, gate: started.append(server.name) or _Job(server, "ok"),
                                  options, lambda *a: None, concurrency=2)
    assert started == [] and [r.error_kind for r in runs] == ["cancelled", "cancelled"]


def test_every_job_shares_one_restart_gate_across_the_fleet():
    gates: set[int] = set()

    def start(server, shared):
        gates.add(id(shared.restart_gate))
        return _Job(server, "ok")

    fleet_module.run_fleet(_servers(3), start, RunOptions(), lambda *a: None, concurrency=3)
    assert len(gates) == 1


# -- lockout arithmetic ------------------------------------------------------------------------------------------------
def _ntlm_authenticate_messages(monkeypatch) -> list[str]:
    """Every NTLM AUTHENTICATE message (type 3: the one a domain controller judges, and counts as a bad logon when
    the password is wrong) the sandbox's servers receive, by server connection, as they arrive."""
    import base64

    from exbe.sandbox import auth

    seen: list[str] = []
    real = auth.ConnectionAuth.step

    def step(self, authorization: str):
        _, _, value = authorization.partition(" ")
        try:
            token = base64.b64decode(value)
        except ValueError:
            token = b""
        if b"NTLMSSP\x00\x03\x00\x00\x00" in token:
            seen.append(authorization[:16])
        return real(self, authorization)

    monkeypatch.setattr(auth.ConnectionAuth, "step", step)
    return seen


def test_a_wrong_password_costs_one_bad_logon_per_run_with_the_defaults(start_fleet, exbe, tmp_path, monkeypatch):
    """Eight servers start together by default, each with two endpoints: the first logon is one endpoint of one
    server, and nothing else logs on until it is decided."""
    fleet = start_fleet([(f"exch0{n}", "healthy") for n in range(1, 9)])
    seen = _ntlm_authenticate_messages(monkeypatch)
    record = tmp_path / "r.json"
    result = exbe(fleet, "verify", "--all", "--json", str(record), password="Wr0ng-password")
    assert result.code == 1
    assert len(seen) == 1, f"{len(seen)} NTLM AUTHENTICATE messages: each is a bad logon against the account"
    servers = json.loads(record.read_text())["servers"]
    assert sum("authentication failed" in s["error"] for s in servers) == 1
    assert sum(s["error"].startswith("not attempted: ") for s in servers) == 7


def test_with_the_right_password_every_server_logs_on_once_per_endpoint(start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([(f"exch0{n}", "healthy") for n in range(1, 4)])
    seen = _ntlm_authenticate_messages(monkeypatch)
    assert exbe(fleet, "verify", "--all").code == 0
    assert len(seen) == 3 * 2, "one logon per endpoint and server: the first one's wait costs no extra logon"


def test_json_calls_a_server_exbe_did_not_try_not_attempted(start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    record = tmp_path / "r.json"
    exbe(fleet, "verify", "--all", "--json", str(record), password="Wr0ng-password")
    verdicts = sorted(s["verdict"] for s in json.loads(record.read_text())["servers"])
    assert verdicts == ["not_attempted", "unreachable"]


def test_servers_run_on_threads_kept_for_the_run_not_new_threads_per_server(start_fleet, exbe, monkeypatch):
    """Each server reads its Exchange endpoint beside the first WinRM pipeline and closes both endpoints at once;
    that work runs on kept threads: a fleet twice as large starts no more of them."""
    started: list[str] = []
    start = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", counted)
    servers = [(f"exch{n:02d}", "healthy") for n in range(1, 9)]
    result = exbe(start_fleet(servers), "verify", "--all", env={"EXBE_CONCURRENCY": "2"})
    assert result.code == 0, result.out[-800:]
    ours = [name for name in started if not name.startswith("sbx")]  # not the in-process sandbox's
    # the fleet's 2 workers, the console, and at most one kept thread per piece of work running at once (2 servers)
    assert len(ours) <= 2 + 1 + 2 * 2 < 2 * len(servers), ours
