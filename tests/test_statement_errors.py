"""exbe decides per statement, as a real server answers a pipeline of several statements (PowerShell's batch,
real-server-shapes.md §4): one statement's error is a record in the stream and its output is missing, the others
answer, the pipeline completes. Run end to end on the sandbox, which answers that way."""

from __future__ import annotations

import json

from exbe.sandbox.faults import Faults

from . import sandbox_probe as probe


def preflight(fleet, exbe, tmp_path) -> dict:
    record = tmp_path / "preflight.json"
    result = exbe(fleet, "preflight", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err
    (step,) = [s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "preflight"]
    return step


def my_thumbprints(fleet) -> set[str]:
    return {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}


def never_blinded(step: dict) -> None:
    text = json.dumps(step).lower()
    assert "blinded" not in text and "expired auth certificate" not in text and "cannot sign" not in text, step


def test_preflight_with_the_projection_refused_reads_the_certificates_from_the_full_objects(start_fleet, exbe,
                                                                                           tmp_path):
    fleet = start_fleet([("exch01", "select_refused")])
    step = preflight(fleet, exbe, tmp_path)
    exchange = step["data"]["exchange"]
    assert {c["thumbprint"] for c in exchange["certificates"]} == my_thumbprints(fleet), \
        "every certificate, read from RawData of the full objects"
    assert all(c["services"] is None for c in exchange["certificates"])
    assert exchange["assignments_unknown"].startswith("the Exchange endpoint refused Select-Object (The term "
                                                      "'Select-Object' is not recognized")
    assert any(w.startswith("Exchange: Get-ExchangeCertificate | Select-Object did not answer: The term "
                            "'Select-Object' is not recognized") for w in step["warnings"]), "the server's own text"
    assert any(w.startswith("service assignments unknown (the Exchange endpoint refused Select-Object")
               for w in step["warnings"]), step["warnings"]
    assert exchange["auth"]["current"], "the statements before the refusal answered"
    never_blinded(step)


def test_preflight_with_get_exchangecertificate_not_permitted_says_the_role_and_never_blinded(start_fleet, exbe,
                                                                                              tmp_path):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(exchange_denied="Get-ExchangeCertificate")})
    host = fleet.host("exch01")
    host.reset_counts()
    step = preflight(fleet, exbe, tmp_path)
    exchange = step["data"]["exchange"]
    assert exchange["certificates"] == [] and "certificates" in exchange["unread"]
    assert "Get-ExchangeCertificate is not permitted for this account" in exchange["assignments_unknown"]
    assert "'Exchange Server Certificates' management role" in exchange["assignments_unknown"]
    assert any("'Get-ExchangeCertificate' is not recognized" in w for w in step["warnings"])
    assert step["data"]["selected"], "the certificate store is the truth: the back-end certificate is still found"
    assert host.request_counts()["exchange"]["Command"] == 1, "no second read with the same refused cmdlet"
    never_blinded(step)


def test_a_step_that_breaks_inside_trust_and_bind_fails_alone_and_the_facts_after_it_are_read(start_fleet, exbe,
                                                                                               tmp_path):
    """trust + bind + facts in one pipeline: trust breaks (a terminating error the template did not catch); bind and
    the facts read after it still answer, and exbe reports each step by its own answer. The bind runs (PowerShell's
    batch runs the next statement) but refuses, changing nothing, since the certificate never reached Root: one
    failure, the bind skipped saying why."""
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(step_fail="trust")})
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    steps = {s["step"]: s for s in json.loads(record.read_text())["servers"][0]["steps"]}
    assert result.code == 1, result.out
    assert steps["trust"]["status"] == "failed"
    assert "The exbe step 'trust' failed: fault injected by the exbe sandbox." in steps["trust"]["message"]
    assert steps["bind"]["status"] == "skipped", "bind ran after trust broke, and refused: nothing changed"
    assert steps["bind"]["message"].startswith("not run: trust failed before it (refusing to bind: ")
    assert "is not in LocalMachine\\Root (the trust before this bind did not complete)" in steps["bind"]["message"]
    assert probe.binding(probe.facts(fleet), "Exchange Back End", "*:444:") == \
        json.loads(record.read_text())["servers"][0]["old_thumbprint"], "444 keeps its certificate"
    assert not any("fault injected" in w for w in steps["bind"]["warnings"]), "trust's record is trust's alone"
