"""`exbe status`: when does what expire, one line per server, most urgent first; read-only and cheap."""

from __future__ import annotations

import json

from .exbe_cli import requests_seen, run_exbe
from .test_lock import plant_interrupted_run


def _lines(out: str) -> list[str]:
    head = next(i for i, line in enumerate(out.splitlines()) if line.startswith("server "))
    return out.splitlines()[head:]


def test_status_shows_each_server_most_urgent_first_with_days_auth_binding_and_lock(start_fleet, tmp_path, capsys,
                                                                                    monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "backend_expiring"), ("exch03", "backend_expired"),
                         ("exch04", "binding_empty"), ("exch05", "auth_cert_expired_with_signing")])
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "status", "--all", "--json", str(tmp_path / "s.json"))
    lines = _lines(result.out)
    assert lines[0].split()[:4] == ["server", "state", "days", "not"]
    order = [line.split()[0] for line in lines[1:6]]
    assert order[0] == "exch04", "a broken 444 binding comes first"
    assert order.index("exch03") < order.index("exch02") < order.index("exch01"), "then fewest days left"
    row = {line.split()[0]: line for line in lines[1:6]}
    assert "BROKEN" in row["exch04"] and row["exch04"].split()[1] == "FAIL"
    assert row["exch01"].split()[1] == "ok" and " free" in row["exch01"]
    assert result.code == 1, "a server that would fail verify's binding or days check makes the exit code 1"
    document = json.loads((tmp_path / "s.json").read_text())
    by_name = {server["server"]: server for server in document["servers"]}
    assert document["format"] == "exbe-status/1" and [s["server"] for s in document["servers"]] == order
    assert by_name["exch03"]["days_left"] < 0 < by_name["exch02"]["days_left"] < 60 < by_name["exch01"]["days_left"]
    assert by_name["exch05"]["auth_days_left"] < 0 < by_name["exch01"]["auth_days_left"]
    assert by_name["exch04"]["binding_ok"] is False and by_name["exch01"]["binding_ok"] is True
    assert by_name["exch01"]["lock"] is None
    assert str(by_name["exch02"]["not_after"]).endswith("Z") and len(by_name["exch02"]["thumbprint"]) == 40


def test_status_changes_nothing_costs_one_read_and_names_a_lock_another_run_holds(start_fleet, tmp_path, capsys,
                                                                                   monkeypatch):
    fleet = start_fleet([("exch01", "healthy")])
    plant_interrupted_run(fleet, expired=False, bind_half_done=False)
    before = fleet.host("exch01").snapshot()
    seen = requests_seen(fleet)
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "status", "--all", "--json", "-")
    requests = requests_seen(fleet) - seen
    document = json.loads(result.out[result.out.index("{"):])
    assert document["servers"][0]["lock"].startswith("run "), document
    assert "agent-gone" in _lines(result.out)[1]
    assert fleet.host("exch01").snapshot() == before, "status changed nothing, not even the lock"
    # preflight's read: exbe's lock looked at and the facts in one WinRM pipeline, the Exchange endpoint beside it
    assert requests == 16, requests
