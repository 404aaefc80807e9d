# ruff: noqa: F811 - the shared fixtures (tests/auth_org.py) are imported, then named as test parameters
"""`exbe federation` on a sandbox organization of three servers: the before-expiry renewal (stage, DNS TXT proof,
publish only once every server has it), the refusal of an expired certificate, and verify's federation_cert."""

from __future__ import annotations

import datetime

from exbe.sandbox.authconfig import REPLICATION_DELAY, Organization
from exbe.sandbox.fleet import Fleet

from .auth_org import Exbe, exbe, real_time, world  # noqa: F401 - pytest fixtures, used as parameters


def federation_step(record: dict) -> dict:
    (step,) = [s for s in record["servers"][0]["steps"] if s["step"] == "federation"]
    return step


def test_a_dry_run_prints_the_plan_with_the_domains_txt_proof_and_changes_nothing(
        world: tuple[Fleet, Organization], exbe: Exbe) -> None:
    org = world[1]
    current = org.create_federation_trust(days_left=40)
    before = {name: host.snapshot() for name, host in world[0].hosts.items()}
    result, record = exbe("federation", "--dry-run", "--domain", "contoso.com", "--verbose")
    assert result.code == 0, result.out + result.err
    step = federation_step(record)
    assert step["status"] == "changed" and step["message"].startswith("would create a Federation certificate")
    (txt,) = step["warnings"]
    assert txt.startswith(f"DNS TXT for contoso.com (certificate {current}): contoso.com IN TXT ")
    assert txt in result.out
    ((check_id, days),) = [(c["id"], c["value"]) for c in step["checks"]]
    assert check_id == "federation_cert" and days in (39, 40)  # 40 days less the seconds since it was made
    assert {name: host.snapshot() for name, host in world[0].hosts.items()} == before


def test_the_renewal_stages_proves_and_publishes_only_once_every_server_has_the_certificate(
        world: tuple[Fleet, Organization], exbe: Exbe) -> None:
    org = world[1]
    current = org.create_federation_trust(days_left=40)
    result, record = exbe("federation", "--domain", "contoso.com")
    assert result.code == 0, result.out + result.err
    assert org.federation is not None
    new = org.federation.next
    assert new and org.federation.current == current
    assert any(new in w and "IN TXT" in w for w in federation_step(record)["warnings"])
    _, record = exbe("federation", "--publish")  # not on exch02 and exch03 yet: it waits
    assert "not on" in federation_step(record)["message"] and org.federation.current == current
    org.advance(REPLICATION_DELAY + datetime.timedelta(minutes=1))
    result, record = exbe("federation", "--publish")
    assert result.code == 0 and federation_step(record)["status"] == "changed"
    assert (org.federation.current, org.federation.next, org.federation.previous) == (new, None, current)
    again, record = exbe("federation")
    assert again.code == 0 and federation_step(record)["status"] == "ok"


def test_an_expired_federation_certificate_is_refused_with_microsofts_procedure(
        world: tuple[Fleet, Organization], exbe: Exbe) -> None:
    org = world[1]
    current = org.create_federation_trust(days_left=-2)
    result, record = exbe("federation")
    step = federation_step(record)
    assert result.code == 1 and "Remove-FederationTrust" in step["message"] and "New-FederationTrust" in step["message"]
    assert org.federation is not None and (org.federation.current, org.federation.next) == (current, None)


def test_verify_reports_the_federation_certificates_expiry_on_every_server(
        world: tuple[Fleet, Organization], exbe: Exbe) -> None:
    _, record = exbe("verify")
    assert {c["status"] for s in record["servers"] for st in s["steps"] for c in st["checks"]
            if c["id"] == "federation_cert"} == {"pass"}  # no trust yet
    world[1].create_federation_trust(days_left=20)
    result, record = exbe("verify")
    found = [c for s in record["servers"] for st in s["steps"] for c in st["checks"] if c["id"] == "federation_cert"]
    assert len(found) == 3 and {c["status"] for c in found} == {"fail"} and {c["value"] for c in found} <= {19, 20}
    assert "exbe federation" in found[0]["message"] and result.code == 1
