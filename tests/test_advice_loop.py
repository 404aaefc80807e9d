"""Every finding's advice closes the loop: run as the console printed it, on the state that raised it, it fixes the
finding, and verify then passes that check. Checks whose fix is outside exbe's reach are listed with the reason, and
their advice says what a human must do.

Each sandbox scenario runs on a host of its own; every failing or warning check it raises gets a fresh host in that
scenario, its printed advice is run there, and one verify at the end judges them all.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from exbe.checks import CHECKS
from exbe.sandbox.state import scenario_names

from .exbe_cli import run_exbe
from .test_lock import plant_interrupted_run

#: Checks a human must fix (exbe never changes what it did not make, or it is not the back-end certificate), with
#: what the advice must tell them to do.
HUMAN = {
    "no_ip_specific_444": "Remove-WebBinding",  # exbe never removes a binding it did not make
    "default_site_not_self_signed": "assign a CA-issued certificate to IIS",  # exbe never touches *:443:
    "backend_no_hsts": "remove it there",  # an IIS setting of the admin's
    "serialization_signing": "enable it",  # a setting override of the organisation's
}
#: Checks no sandbox scenario raises, and why they are covered anyway.
NOT_RAISED = {
    "backend_no_hsts": "no scenario turns HSTS on: its advice is specified in tests/test_checks.py",
    "serialization_signing": "no scenario disables signing: its advice is specified in tests/test_checks.py",
    # the organization's certificates: their advice is an organization job, run then verified in its own tests
    "auth_next": "tests/test_auth_job.py runs `exbe auth` per MEAC row, then verify passes",
    "auth_previous": "tests/test_auth_job.py runs `exbe auth` per MEAC row, then verify passes",
    "federation_cert": "tests/test_federation.py runs `exbe federation`, then verify passes",
}
#: States that are not a scenario of their own: prepared by running exbe on a scenario first.
PREPARED = {
    # the case that kept verify yellow: a default renewal leaves SMTP on the expired certificate
    "renewed_smtp_left_behind": ("backend_expired", ("renew",)),
    # a run killed with -9 in the middle of its renewal
    "interrupted_run": ("healthy", ()),
}
ADVICE = re.compile(r"`(exbe [^`]+)`")


def _findings(out: str) -> dict[str, dict[str, str]]:
    """FINDINGS as {server: {check id: the message as printed}}."""
    lines = out.splitlines()
    start = lines.index("FINDINGS")
    found: dict[str, dict[str, str]] = {}
    server = ""
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if not line.startswith(" "):
            server = line.split()[0]
            found[server] = {}
        elif line.split()[0] in ("fail", "warn"):
            _, check, message = line.split(None, 2)
            found[server][check] = message
    return found


def _statuses(record: Path) -> dict[str, dict[str, str]]:
    document = json.loads(record.read_text())
    return {server["server"]: {check["id"]: check["status"] for step in server["steps"] if step["step"] == "verify"
                               for check in step.get("checks") or []} for server in document["servers"]}


def _prepare(fleet, host: str, state: str, tmp_path, capsys, monkeypatch) -> None:
    if state == "interrupted_run":
        plant_interrupted_run(fleet, expired=True, bind_half_done=False)
    for task in PREPARED.get(state, ("", ()))[1]:
        assert run_exbe(fleet, tmp_path, capsys, monkeypatch, task, "--server", host).code == 0


# One exbe run per finding, in sequence: at a load average of 25 they outlasted the suite's 300 s hang guard, so
# this test's guard is longer; it still catches a hang, and speed is measured in bench/, never here.
@pytest.mark.timeout(1200)
def test_every_finding_s_printed_advice_fixes_it(start_fleet, tmp_path, capsys, monkeypatch):
    states = [name for name in scenario_names() if name != "healthy"] + list(PREPARED)
    # 1. what each state raises, and the advice printed for it
    survey = start_fleet([("exch01" if s == "interrupted_run" else f"s{i:02d}", PREPARED.get(s, (s,))[0])
                          for i, s in enumerate(states)])
    names = dict(zip(states, ["exch01" if s == "interrupted_run" else f"s{i:02d}" for i, s in enumerate(states)],
                     strict=True))
    for state in PREPARED:
        _prepare(survey, names[state], state, tmp_path, capsys, monkeypatch)
    seen = run_exbe(survey, tmp_path, capsys, monkeypatch, "verify", "--all")
    printed = _findings(seen.out)
    raised = {(state, check): message for state in states for check, message in printed.get(names[state], {}).items()}
    ids = {check.__name__ for check in CHECKS}
    assert {check for _, check in raised} == ids - set(NOT_RAISED), "every check that can fail or warn is raised"

    # 2. the human's checks say what the human must do; every other advice names an exbe command for this server
    loops = []
    for (state, check), message in sorted(raised.items()):
        if check in HUMAN:
            assert HUMAN[check] in message, (state, check, message)
            continue
        commands = ADVICE.findall(message)
        assert commands, f"{state}: {check}'s advice names no exbe command: {message}"
        assert f"--server {names[state]}" in commands[0], commands[0]
        loops.append((state, check, commands[0]))

    # 3. each advice, run as printed on a fresh host in the state that raised it, fixes its finding
    hosts = [(f"f{i:02d}" if state != "interrupted_run" else "exch01", PREPARED.get(state, (state,))[0])
             for i, (state, _, _) in enumerate(loops)]
    fleet = start_fleet(hosts)
    for (state, _check, command), (host, _) in zip(loops, hosts, strict=True):
        _prepare(fleet, host, state, tmp_path, capsys, monkeypatch)
        argv = shlex.split(command.replace(f"--server {names[state]}", f"--server {host}"))[1:]
        ran = run_exbe(fleet, tmp_path, capsys, monkeypatch, *argv)
        assert ran.code in (0, 1), f"{state}: `{command}` was refused: {ran.err}"
    judged = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--json", str(tmp_path / "after.json"))
    after = _statuses(tmp_path / "after.json")
    unfixed = [(state, check, command, after[host][check])
               for (state, check, command), (host, _) in zip(loops, hosts, strict=True)
               if after[host][check] != "pass"]
    assert unfixed == [], f"{unfixed}\n{judged.out}"


def test_smtp_moves_to_the_back_end_certificate_without_a_renewal_and_the_move_is_recorded(start_fleet, tmp_path,
                                                                                            capsys, monkeypatch):
    fleet = start_fleet([("exch01", "backend_expired")])
    assert run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01").code == 0
    warned = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--server", "exch01")
    assert "`exbe renew --smtp move --server exch01`" in warned.out, "a default renewal leaves SMTP behind"
    plan = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01", "--smtp", "move",
                    "--dry-run")
    assert "would move SMTP to " in plan.out and "would fix" in plan.out
    moved = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01", "--smtp", "move", "--json",
                     str(tmp_path / "moved.json"))
    assert moved.code == 0, moved.out
    renew = next(step for step in json.loads((tmp_path / "moved.json").read_text())["servers"][0]["steps"]
                 if step["step"] == "renew")
    assert renew["status"] == "changed" and renew["message"].startswith("not needed: ")
    assert renew["after"]["smtp"] != renew["before"]["smtp"]
    assert "changed=1" in next(line for line in moved.out.splitlines() if line.startswith("exch01 :"))
    journal = json.loads(fleet.host("exch01").snapshot()["exbe_files"]["last-run.json"]["text"])["journal"]
    assert any(entry.get("intent", "").startswith("move SMTP to ") for entry in journal), journal
    again = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01", "--smtp", "move")
    assert "changed=0" in next(line for line in again.out.splitlines() if line.startswith("exch01 :")), "idempotent"
    assert "internal_transport_cert" not in run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all").out
