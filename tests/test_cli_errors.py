"""Bad input gives one line that says what is wrong and what to do, the documented exit code, and no secret."""

from __future__ import annotations

import json
import os
import socket

import pytest

from .conftest import PASSWORD
from .exbe_cli import requests_seen, write_config


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


# --- every bad value: one line, exit code 2, no server contacted ------------------------------------------------


@pytest.mark.parametrize("args", [
    ("renew", "--days", "abc"),
    ("renew", "--days", "-5"),
    ("renew", "--days=-5"),
    ("cleanup", "--min-age", "x"),
    ("renew", "--smtp", "steal"),
    ("bind", "--thumbprint", "not-a-thumbprint"),
    ("verify", "--shard", "3/2"),
], ids=" ".join)
def test_a_bad_flag_value_is_one_line_and_exit_2_before_any_server_is_contacted(fleet, exbe, args):
    result = exbe(fleet, *args, "--server", "exch01")
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and result.err.startswith("exbe: "), result.err
    assert "Traceback" not in result.err and result.out == ""
    assert requests_seen(fleet) == 0


def test_a_malformed_day_count_says_what_it_takes(fleet, exbe):
    result = exbe(fleet, "renew", "--server", "exch01", "--days", "abc")
    assert result.err == ("exbe: --days must be an integer, got 'abc' (for example --days 60; renew when fewer days "
                          "are left)\n")


def test_a_bad_setting_in_the_environment_stops_the_run_before_any_server(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch01", env={"EXBE_TRUST": "maybe"})
    assert result.code == 2 and result.err.startswith("exbe: EXBE_TRUST must be true or false"), result
    assert requests_seen(fleet) == 0


def test_a_former_variable_name_stops_the_run_and_names_the_new_one(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch01", env={"EXBE_EXBE_DEFAULTS_DAYS": "45"})
    assert result.code == 2, result
    assert result.err == "exbe: EXBE_EXBE_DEFAULTS_DAYS is no longer read: set EXBE_DAYS instead " \
                         "(docs/configuration.md)\n"
    assert requests_seen(fleet) == 0


def test_an_unknown_exbe_variable_is_warned_about_and_the_run_goes_on(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch01", env={"EXBE_DAIS": "45"})
    assert result.code == 0, result
    assert "exbe: warning: EXBE_DAIS is not a variable exbe reads, ignored; did you mean EXBE_DAYS?" in result.err


def test_the_renewal_threshold_comes_from_exbe_days_and_the_flag_beats_it(fleet, exbe):
    from_env = exbe(fleet, "renew", "--server", "exch01", "--dry-run", env={"EXBE_DAYS": "70"})
    assert "(threshold 70)" in from_env.out, from_env
    from_flag = exbe(fleet, "renew", "--server", "exch01", "--dry-run", "--days", "75", env={"EXBE_DAYS": "70"})
    assert "(threshold 75)" in from_flag.out, from_flag


@pytest.mark.parametrize("args", [("renew", "--server", "exch01", "--days", "45"), ("verify", "--server", "exch01"),
                                  ("render", "renew")])
def test_days_below_the_verify_thresholds_is_refused_so_renew_and_verify_never_disagree(fleet, exbe, args):
    result = exbe(fleet, *args, env={"EXBE_DAYS": "45"})
    assert (result.code, result.err.count("\n")) == (2, 1), result
    assert result.err.startswith("exbe: days (45) is below warn_days (60): verify would warn about a certificate "
                                 "that renew leaves alone; set days")
    assert exbe(fleet, "verify", "--server", "exch01", env={"EXBE_DAYS": "45", "EXBE_WARN_DAYS": "45",
                                                            "EXBE_FAIL_DAYS": "30"}).code == 0, \
        "thresholds lowered with it: accepted"


# --- report paths are checked before the run ---------------------------------------------------------------------


def test_an_unwritable_report_path_is_refused_before_any_server_is_changed(fleet, exbe, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be", encoding="utf-8")
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--json", str(blocker / "exbe.json"))
    assert result.code == 2, result
    assert result.err.startswith(f"exbe: --json '{blocker / 'exbe.json'}' cannot be written: {blocker} is a file, "
                                 "not a directory")
    assert result.err.count("\n") == 1
    assert requests_seen(fleet) == 0


def test_a_directory_given_as_report_path_is_refused(fleet, exbe, tmp_path):
    result = exbe(fleet, "verify", "--server", "exch01", "--junit", str(tmp_path))
    assert result.code == 2 and "is a directory; give a file name" in result.err, result
    assert requests_seen(fleet) == 0


def test_a_missing_report_directory_is_created(fleet, exbe, tmp_path):
    junit = tmp_path / "reports" / "nightly" / "exbe.xml"
    result = exbe(fleet, "verify", "--server", "exch01", "--junit", str(junit))
    assert result.code == 0, result
    assert junit.read_text(encoding="utf-8").startswith("<?xml")


def test_checking_a_report_path_leaves_no_file_behind_when_the_run_stops_early(fleet, exbe, tmp_path):
    record = tmp_path / "out" / "exbe.json"
    result = exbe(fleet, "verify", "--server", "exch99", "--json", str(record))
    assert result.code == 2
    assert not record.exists()


# --- credentials ---------------------------------------------------------------------------------------------------


def test_without_credentials_a_refused_logon_says_that_no_credentials_were_given(fleet, exbe, monkeypatch):
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)  # the in-process sandbox's account file, which spnego reads
    result = exbe(fleet, "verify", "--server", "exch01", credentials=False)
    assert result.code == 1, result
    assert "no credentials to log on with" in result.err and "did not speak WinRM" not in result.err
    assert ("exbe: no credentials were given (EXBE_USERNAME and EXBE_PASSWORD are not set), so exbe used this agent's "
            "own logon; set both to connect as a named account") in result.err.splitlines()


def test_with_credentials_a_refused_logon_does_not_blame_missing_ones(fleet, exbe):
    result = exbe(fleet, "verify", "--server", "exch01", password="Wr0ng-" + PASSWORD)
    assert result.code == 1 and "no credentials were given" not in result.err


def test_an_unknown_sandbox_scenario_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from exbe.main import ExbeProgram

    monkeypatch.chdir(tmp_path)  # no exbe.yaml: the embedded sandbox, which must not start with a bad scenario
    monkeypatch.setenv("EXBE_SANDBOX_SCENARIOS", "nope")
    with pytest.raises(SystemExit) as caught:
        ExbeProgram().run(["exbe", "verify", "--all", "--sandbox"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1
    assert err.startswith("exbe: unknown sandbox scenario nope; known: ") and "EXBE_SANDBOX_SCENARIOS" in err


def test_a_report_path_this_agent_may_not_write_is_refused(tmp_path, monkeypatch):
    from exbe.cli import writable_report
    from exbe.errors import ConfigError

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", refuse)  # tests run as root, for whom no permission bit refuses anything
    with pytest.raises(ConfigError) as caught:
        writable_report("--junit", str(tmp_path / "exbe.xml"))
    assert str(caught.value) == (f"--junit '{tmp_path / 'exbe.xml'}' cannot be written (Permission denied); choose a "
                                 "path this agent can write")
    assert caught.value.exit_code == 2


def test_checking_a_report_path_never_creates_the_report_itself(tmp_path, monkeypatch):
    """A pipeline step or collector waiting for the report must not see an empty file come and go before the run:
    the check writes a hidden temporary file beside it instead."""
    from exbe.cli import writable_report

    created: list[str] = []
    real_open = os.open

    def recording(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            created.append(os.path.basename(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording)
    writable_report("--json", str(tmp_path / "exbe.json"))
    assert created and all(name.startswith(".exbe.json.") and name.endswith(".tmp") for name in created), created
    assert list(tmp_path.iterdir()) == []


def test_a_server_answering_ntlm_over_http_in_plaintext_is_refused_and_nothing_it_said_is_used(start_fleet, exbe,
                                                                                                tmp_path):
    from exbe.sandbox.faults import Faults

    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(plaintext=True)})
    before = fleet.host("exch01").snapshot()
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    assert result.code == 1
    assert "the server answered without message encryption" in result.err
    (server,) = json.loads(record.read_text())["servers"]
    assert [s["step"] for s in server["steps"]] == ["connect"], "no step ran on what a forger could have said"
    assert fleet.host("exch01").snapshot() == before


@pytest.mark.parametrize(("program", "named", "not_named"), [
    ("invoke", ["invoke.yaml, invoke.yml, invoke.json in {cwd}", "INVOKE_RUNTIME_CONFIG"], "exbe.yaml"),
    ("exbe", ["exbe.yaml, exbe.yml, exbe.json in {cwd}", "EXBE_RUNTIME_CONFIG"], "invoke.yaml"),
])
def test_without_an_inventory_each_entry_point_names_the_files_it_really_looked_for(tmp_path, program, named,
                                                                                      not_named):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "exbe").symlink_to(root / "exbe", target_is_directory=True)
    (tmp_path / ("exbe.yaml" if program == "invoke" else "invoke.yaml")).write_text("exbe: {inventory: [exch01]}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EXBE_", "INVOKE_"))},
           "PYTHONPATH": str(root), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-P", "-m", program, "verify", "--all"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith("exbe: no inventory is configured (looked for ")
    for text in named:
        assert text.format(cwd=tmp_path) in result.stderr
    assert not_named not in result.stderr
