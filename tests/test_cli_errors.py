"""Bad input gives one line that says what is wrong and what to do, the documented exit code, and no secret."""

from __future__ import annotations

import json
import socket

import pytest

from .conftest import PASSWORD
from .exbe_cli import run_exbe, write_config


@pytest.fixture
def exbe(tmp_path, capsys, monkeypatch):
    def run(fleet, *args, **kwargs):
        return run_exbe(fleet, tmp_path, capsys, monkeypatch, *args, **kwargs)
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(fleet, tmp_path, **changes):
    cfg = write_config(fleet, tmp_path / "exbe.yaml")
    doc = json.loads(cfg.read_text())
    doc["exbe"]["inventory"][0].update(changes)
    doc["exbe"]["inventory"][0] = {k: v for k, v in doc["exbe"]["inventory"][0].items() if v is not None}
    cfg.write_text(json.dumps(doc))
    return cfg


def _assert_one_line_failure(result, code, *needles):
    assert result.code == code, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines, "an error line on stderr"
    assert all(n in result.err + result.out for n in needles), result
    assert PASSWORD not in result.out + result.err


def test_unknown_server_names_it_and_the_known_ones_and_exits_2(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch99")
    _assert_one_line_failure(result, 2, "exch99", "exch01")


def test_no_server_selected_is_a_usage_error(fleet, exbe):
    _assert_one_line_failure(exbe(fleet, "verify"), 2, "--server")


def test_wrong_password_says_authentication_failed_and_what_to_do(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch01", password="Wr0ng-" + PASSWORD)
    _assert_one_line_failure(result, 1, "authentication failed", "EXBE_USERNAME")
    assert ("Wr0ng-" + PASSWORD) not in result.out + result.err


def test_unreachable_host_says_cannot_connect(fleet, exbe, tmp_path):
    cfg = _config(fleet, tmp_path, port=_free_port(), exchange_port=_free_port())
    result = exbe(fleet, "verify", "--server", "exch01", config=cfg)
    _assert_one_line_failure(result, 1, "cannot connect")


def test_tls_validation_failure_says_so_and_points_at_ca_file(fleet, exbe, tmp_path):
    https = fleet.ports("exch01")["https"]
    cfg = _config(fleet, tmp_path, port=https, exchange_port=https, ssl=True, exchange_ssl=True, auth="basic",
                  ca_file=None)
    result = exbe(fleet, "verify", "--server", "exch01", config=cfg)
    _assert_one_line_failure(result, 1, "TLS certificate validation failed", "ca_file")


def test_the_password_appears_in_no_output_and_no_artifact(fleet, exbe, tmp_path):
    junit, record = tmp_path / "a.xml", tmp_path / "a.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--junit", str(junit), "--json", str(record))
    assert result.code == 0, result.out
    wrong = exbe(fleet, "verify", "--server", "exch01", "--junit", str(tmp_path / "b.xml"), password=PASSWORD + "x")
    for text in (result.out, result.err, wrong.out, wrong.err, junit.read_text(), record.read_text(),
                 (tmp_path / "b.xml").read_text()):
        assert PASSWORD not in text
    for state in fleet.state_dir.glob("exch*.json"):
        assert PASSWORD not in state.read_text()
