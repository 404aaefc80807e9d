"""cleanup on a server whose superseded certificates still serve TLS outside the two Exchange sites (a WinRM HTTPS
listener, a third IIS site, WMSvc) or share the kept certificate's key: `exbe cleanup` keeps them, says where each
is in use, and never deletes a shared key (issue 20, item 5; real-server-shapes.md §4)."""

from __future__ import annotations

import json

from .exbe_cli import run_exbe


def test_exbe_cleanup_keeps_what_serves_tls_elsewhere_and_a_shared_key(start_fleet, tmp_path, capsys, monkeypatch):
    fleet = start_fleet([("exch01", "superseded_in_use_elsewhere")])
    host = fleet.host("exch01")
    with host.lock:
        state = host.state
        bound = state.binding("Exchange Back End", "*:444:").certificate_hash
        container = state.find("My", bound).key_container
        winrm = next(x["CertificateThumbprint"] for x in state.winrm_listeners if x["Transport"] == "HTTPS")
        third = state.binding("Contoso Intranet", "*:8443:").certificate_hash
        wmsvc = state.ssl_bindings["0.0.0.0!8172"]
        shared = next(c.thumbprint for c in state.my if c.thumbprint != bound and c.key_container == container)
    record = tmp_path / "cleanup.json"
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "cleanup", "--server", "exch01", "--min-age", "0",
                      "--json", str(record))
    assert result.code == 0, result.out + result.err
    step = next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "cleanup")
    refused = {r["thumbprint"]: r["reason"] for r in step["data"]["refused"]}
    assert refused == {winrm: "in use: the WinRM HTTPS listener *:5986",
                       third: "in use: the http.sys SSL binding 0.0.0.0!8443",
                       wmsvc: "in use: the http.sys SSL binding 0.0.0.0!8172"}
    assert shared in step["data"]["removed_my"]
    assert [k["thumbprint"] for k in step["data"]["kept_keys"]] == [shared]
    assert "in use: the WinRM HTTPS listener *:5986" in step["message"]
    with host.lock:
        state = host.state
        assert all(state.find("My", t) is not None for t in (winrm, third, wmsvc, bound))
        assert state.find("My", shared) is None
        assert state.find("My", bound).key_accessible, "the bound certificate's key container survived"
