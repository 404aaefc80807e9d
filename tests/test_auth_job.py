# ruff: noqa: F811 - the shared fixtures (tests/auth_org.py) are imported, then named as test parameters
"""`exbe auth` on a sandbox organization of three servers: each row of MEAC's decision table, the hybrid and
unreachable variants; a rerun changes nothing and verify passes afterwards; the clock moved past the effective date
makes the staged certificate current."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from exbe.jobs.auth import AuthServer
from exbe.sandbox.auth_steps import recycled
from exbe.sandbox.authconfig import REPLICATION_DELAY, Organization
from exbe.sandbox.fleet import Fleet
from exbe.sandbox.state import utcnow
from exbe.steps.reload import APP_POOLS

from .auth_org import Exbe, exbe, org, real_time, world  # noqa: F401 - pytest fixtures, used as parameters


def steps(record: dict, name: str, server: int = 0) -> list[dict]:
    return [s for s in record["servers"][server]["steps"] if s["step"] == name]


def auth_step(record: dict) -> dict:
    (step,) = steps(record, "auth")
    return step


def config(org: Organization) -> tuple[str | None, str | None, str | None]:
    return org.current, org.next, org.previous


def check(record: dict, check_id: str, server: int) -> dict:
    (verify,) = steps(record, "verify", server)
    (found,) = [c for c in verify["checks"] if c["id"] == check_id]
    return found


def held_locks(world: tuple[Fleet, Organization]) -> list[str]:
    return [name for name, host in world[0].hosts.items() if "lock.json" in host.state.exbe_files]


def test_row_2_stages_a_next_certificate_a_rerun_changes_nothing_and_the_clock_makes_it_current(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    old = org.set_auth(45)["current"]
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    step = auth_step(record)
    assert step["status"] == "changed" and step["data"]["row"] == 2
    new = step["data"]["new_thumbprint"]
    assert (org.current, org.next) == (old, new)
    effective = org.next_effective
    assert effective is not None and datetime.timedelta(days=29) < effective - utcnow() <= datetime.timedelta(days=30)
    assert steps(record, "verify")[0]["status"] == "ok"
    assert held_locks(world) == []
    # a rerun right away changes nothing: the servicelet has time to copy the next certificate
    again, record = exbe("auth")
    assert again.code == 0 and auth_step(record)["status"] == "ok" and (org.current, org.next) == (old, new)
    verified, record = exbe("verify")
    assert verified.code == 0, verified.out
    assert check(record, "auth_next", 1)["status"] == "warn", check(record, "auth_next", 1)  # not copied yet
    org.advance(REPLICATION_DELAY + datetime.timedelta(minutes=5))
    verified, record = exbe("verify")
    assert verified.code == 0 and {check(record, "auth_next", n)["status"] for n in range(3)} == {"pass"}
    org.advance(datetime.timedelta(days=30))
    assert (org.current, org.next, org.previous) == (new, None, old)
    _, record = exbe("auth")
    assert auth_step(record)["status"] == "ok"


def test_row_1_replaces_an_expired_certificate_now_and_reloads_each_server_one_at_a_time(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    old = org.set_auth(-3)["current"]  # expired, signing on: Exchange's certificate cmdlets are blinded
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    step = auth_step(record)
    assert step["data"]["row"] == 1 and step["data"]["method"] == "clone over WinRM"
    new = step["data"]["new_thumbprint"]
    assert (org.current, org.next, org.previous) == (new, None, None)
    assert all(m.state.find("My", new) is not None for m in org.members)
    reloads = [steps(record, "reload", n) for n in range(3)]
    assert [[r["status"] for r in each] for each in reloads] == [["changed"]] * 3
    assert all(host.state.iis_restarts == 0 for host in world[0].hosts.values())  # IIS is left alone
    assert all(host.state.services["MSExchangeServiceHost"] == "Running" for host in world[0].hosts.values())
    assert [recycled(host.state) for host in world[0].hosts.values()] == [list(APP_POOLS)] * 3
    assert "MSExchangeServiceHost" in reloads[0][0]["message"]
    assert org.members[0].state.find("My", old) is not None  # nothing in use is deleted
    again, record = exbe("auth")
    assert again.code == 0 and auth_step(record)["status"] == "ok"
    verified, _ = exbe("verify")
    assert verified.code == 0, verified.out


def test_row_3_publishes_the_staged_next_certificate_when_the_current_one_has_expired(
        org: Organization, exbe: Exbe) -> None:
    made = org.set_auth(-2, next_days=1500, next_effective_in=datetime.timedelta(days=3))
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    assert auth_step(record)["data"]["row"] == 3
    assert (org.current, org.next, org.previous) == (made["next"], None, None)
    assert exbe("auth")[0].code == 0 and exbe("verify")[0].code == 0


def lacking(org: Organization, thumb: str, *servers: int) -> None:
    """These servers lose ``thumb`` and their servicelet copies nothing (MEAC's rows 4 and 5)."""
    for n in servers:
        member = org.members[n]
        org.not_replicating.add(member.name)
        member.state.my.remove(member.state.find("My", thumb))


@pytest.mark.parametrize("missing", ["current", "next"])
def test_rows_4_and_5_import_the_missing_certificate_there_then_verify_passes_and_a_rerun_changes_nothing(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe, missing: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    made = org.set_auth(400, next_days=1500, next_effective_in=datetime.timedelta(hours=12))
    lacking(org, made[missing], 1)
    before = config(org)
    journaled: list[tuple[str, str | None]] = []
    note = AuthServer.note
    monkeypatch.setattr(AuthServer, "note", lambda self, step, intent, replaced, new, error: journaled.append(
        (f"{self.server.name}: {intent}", new)) or note(self, step, intent, replaced, new, error))
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    step = auth_step(record)
    assert step["status"] == "changed" and step["data"]["row"] == (4 if missing == "current" else 5)
    assert "replication takes time" in step["message"] and "KB 2617816" in step["message"]
    (item,) = step["data"]["import"]
    assert (item["role"], item["source"], item["targets"]) == (missing, "exch01", ["exch02"])
    assert item["sites"] == {"exch02": "Default-First-Site-Name"}  # Get-ExchangeServer's Site
    copy = org.members[1].state.find("My", made[missing])
    assert copy is not None and copy.key_pem is not None and copy.exportable  # -PrivateKeyExportable $true
    assert config(org) == before  # an import never touches the Auth configuration
    assert steps(record, "verify")[0]["status"] == "ok" and held_locks(world) == []
    assert journaled == [(f"exch01: Import-ExchangeCertificate {made[missing]} on exch02", made[missing])]
    verified, record = exbe("verify")
    assert verified.code == 0, verified.out
    assert {check(record, f"auth_{'cert' if missing == 'current' else 'next'}", 1)["status"]} <= {"pass"}
    again, record = exbe("auth")
    assert again.code == 0 and auth_step(record)["status"] == "ok" and config(org) == before


def test_one_server_per_ad_site_imports_and_the_rest_of_the_site_gets_it_by_replication(
        org: Organization, exbe: Exbe) -> None:
    current = org.set_auth(400)["current"]
    org.sites.update({"exch02": "Branch", "exch03": "Branch"})
    lacking(org, current, 1, 2)
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    (item,) = auth_step(record)["data"]["import"]
    assert (item["targets"], item["waiting_for_replication"]) == (["exch02"], ["exch03"])
    assert org.members[2].state.find("My", current) is None
    (verify,) = steps(record, "verify")
    assert verify["status"] == "ok" and "waiting for replication" in verify["message"]
    org.advance(REPLICATION_DELAY + datetime.timedelta(minutes=5))
    assert org.members[2].state.find("My", current) is not None
    again, record = exbe("auth")
    assert again.code == 0 and auth_step(record)["status"] == "ok"


def test_servers_in_different_sites_each_get_an_import_exported_from_a_server_that_is_not_the_home_one(
        org: Organization, exbe: Exbe) -> None:
    current = org.set_auth(400)["current"]
    org.sites.update({"exch02": "Branch"})
    lacking(org, current, 0, 1)  # only exch03 has it: the export runs there, the imports on exch01's endpoint
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    (item,) = auth_step(record)["data"]["import"]
    assert (item["source"], item["targets"], item["waiting_for_replication"]) == ("exch03", ["exch01", "exch02"], [])
    assert all(m.state.find("My", current) is not None for m in org.members)
    assert exbe("verify")[0].code == 0


def test_an_unreachable_server_stops_an_import_unless_the_admin_says_to_go_on(
        org: Organization, exbe: Exbe) -> None:
    current = org.set_auth(400)["current"]
    lacking(org, current, 1)
    org.unreachable.add(org.members[2].name)
    result, record = exbe("auth")
    step = auth_step(record)
    assert result.code == 1 and "--ignore-unreachable" in step["message"] and "exch03" in step["message"]
    assert org.members[1].state.find("My", current) is None
    result, record = exbe("auth", "--ignore-unreachable")
    assert result.code == 0, result.out + result.err
    assert auth_step(record)["data"]["import"][0]["targets"] == ["exch02"]  # never the unreachable one
    assert org.members[1].state.find("My", current) is not None


def test_when_only_an_unreachable_server_holds_the_certificate_nothing_is_changed(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    current = org.set_auth(400)["current"]
    lacking(org, current, 0, 1)  # only exch03 has it, and exbe cannot reach exch03's WinRM (Exchange can)
    world[0].host("exch03").faults.http_500 = True
    before = {name: host.snapshot() for name, host in world[0].hosts.items()}
    result, record = exbe("auth")
    assert result.code == 1 and "--ignore-unreachable" in auth_step(record)["message"]
    result, record = exbe("auth", "--ignore-unreachable")
    step = auth_step(record)
    assert result.code == 1 and step["status"] == "failed"
    assert "nothing to export it from" in step["message"] and "nothing was changed" in step["message"]
    after = {name: host.snapshot() for name, host in world[0].hosts.items()}
    assert [after[n]["certificates"] for n in after] == [before[n]["certificates"] for n in before]
    assert config(org) == (current, None, None) and held_locks(world) == []


def test_a_dry_run_prints_the_import_plan_and_changes_nothing(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    current = org.set_auth(400)["current"]
    lacking(org, current, 1)
    before = {name: host.snapshot() for name, host in world[0].hosts.items()}
    result, record = exbe("auth", "--dry-run")
    step = auth_step(record)
    assert step["status"] == "changed" and step["message"].startswith(
        f"would export the current Auth certificate {current} from exch01 and import it on exch02 "
        "(site Default-First-Site-Name)")
    assert "replication takes time" in step["message"] and current[:8] in result.out
    assert {name: host.snapshot() for name, host in world[0].hosts.items()} == before


def test_hybrid_stops_staging_until_acknowledged_then_writes_the_cer_and_says_what_to_do(
        org: Organization, exbe: Exbe, tmp_path: Path) -> None:
    old = org.set_auth(45)["current"]
    org.hybrid = True
    result, record = exbe("auth")
    assert result.code == 1 and "--hybrid" in auth_step(record)["message"] and org.next is None
    cer = tmp_path / "next.cer"
    result, record = exbe("auth", "--hybrid", "--cer", str(cer))
    assert result.code == 0, result.out + result.err
    step = auth_step(record)
    assert org.current == old and org.next == step["data"]["new_thumbprint"]
    assert x509.load_der_x509_certificate(cer.read_bytes()).subject.rfc4514_string() == (
        "CN=Microsoft Exchange Server Auth Certificate")
    (hybrid,) = [w for w in step["warnings"] if w.startswith("hybrid:")]
    assert "Hybrid Configuration Wizard" in hybrid and "-UpdateCertificate" in hybrid and "cannot see" in hybrid


def test_an_unreachable_server_stops_every_change_unless_the_admin_says_to_go_on(
        org: Organization, exbe: Exbe) -> None:
    old = org.set_auth(45)["current"]
    org.unreachable.add(org.members[2].name)
    result, record = exbe("auth")
    step = auth_step(record)
    assert result.code == 1 and "exch03" in step["message"] and "--ignore-unreachable" in step["message"]
    assert (org.current, org.next) == (old, None)
    result, record = exbe("auth", "--ignore-unreachable")
    assert result.code == 0 and org.next == auth_step(record)["data"]["new_thumbprint"]


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    org.set_auth(-1)
    before = {name: host.snapshot() for name, host in world[0].hosts.items()}
    result, record = exbe("auth", "--dry-run")
    step = auth_step(record)
    assert step["status"] == "changed" and step["message"].startswith("would create an Auth certificate")
    assert {name: host.snapshot() for name, host in world[0].hosts.items()} == before


@pytest.mark.parametrize(("current_days", "failing"), [(45, "Set-AuthConfig"), (-3, "Set-AuthConfig"),
                                                      (-3, "clone"), (45, "New-ExchangeCertificate")])
def test_a_fault_in_any_auth_step_leaves_auth_config_on_certificates_every_reachable_server_holds(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe,
        current_days: int, failing: str) -> None:
    org.set_auth(current_days)
    world[0].host("exch01").faults.step_fail = failing
    result, record = exbe("auth")
    assert result.code == 1 and auth_step(record)["status"] == "failed"
    for thumb in (t for t in (org.current, org.next) if t):
        assert all(m.state.find("My", thumb) is not None for m in org.members)
    assert held_locks(world) == []
    world[0].host("exch01").faults.step_fail = None
    healed, _ = exbe("auth")  # the next run converges
    assert healed.code == 0, healed.out + healed.err


def test_a_reload_that_fails_on_a_server_is_a_warning_and_the_replacement_stands(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe) -> None:
    org.set_auth(-3)
    world[0].host("exch02").faults.step_fail = "reload"
    result, record = exbe("auth")
    assert result.code == 0, result.out + result.err
    (failed,) = steps(record, "reload", 1)
    assert failed["status"] == "skipped" and "not an error" in failed["message"]
    assert any("reload" in w for w in failed["warnings"])
    assert [s["status"] for n in (0, 2) for s in steps(record, "reload", n)] == ["changed", "changed"]
    assert auth_step(record)["status"] == "changed" and org.current == auth_step(record)["data"]["new_thumbprint"]
