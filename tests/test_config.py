"""Configuration as an Exchange admin meets it: exbe.yaml, EXBE_* variables, the inventory, --server/--group/--all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from invoke import Collection, Config, task

from exbe.config import (
    DEFAULTS,
    Credentials,
    ExbeConfig,
    Server,
    collection_config,
    defaults_dict,
    load_inventory,
    select_servers,
)
from exbe.errors import ConfigError, UnknownServerError
from exbe.main import make_program
from exbe.redaction import REDACTOR, Secret

ROOT = Path(__file__).resolve().parent.parent


def env_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> ExbeConfig:
    """An ExbeConfig after Invoke's environment step, with exactly ``env`` set among EXBE_* variables."""
    for name in list(os.environ):
        if name.startswith("EXBE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = ExbeConfig()
    config.load_shell_env()
    return config


def inventory(*entries: object, **defaults: object) -> list[Server]:
    return load_inventory({"inventory": list(entries), "defaults": defaults})


FLEET = [
    {"name": "exch01", "host": "exch01.contoso.local", "groups": ["dag1"]},
    {"name": "exch02", "host": "exch02.contoso.local", "groups": ["dag1", "site-b"]},
    {"name": "exch03", "host": "exch03.contoso.local", "groups": ["site-b"]},
]


def names(servers: list[Server]) -> list[str]:
    return [server.name for server in servers]


# --- environment variables --------------------------------------------------------------------------------------


def test_days_threshold_can_be_set_with_the_documented_exbe_variable(monkeypatch):
    config = env_config(monkeypatch, EXBE_EXBE_DEFAULTS_DAYS="45")
    assert config.exbe.defaults.days == 45


def test_nested_sandbox_settings_take_their_variables_with_the_full_path(monkeypatch):
    config = env_config(monkeypatch, EXBE_EXBE_DEFAULTS_SANDBOX_HOSTS="10", EXBE_EXBE_DEFAULTS_SANDBOX_FAULTS="bind")
    assert config.exbe.defaults.sandbox.hosts == 10
    assert config.exbe.defaults.sandbox.faults == "bind"


def test_boolean_variables_are_false_only_for_zero_or_empty(monkeypatch):
    assert env_config(monkeypatch, EXBE_EXBE_DEFAULTS_RESTART_IIS="1").exbe.defaults.restart_iis is True
    assert env_config(monkeypatch, EXBE_EXBE_DEFAULTS_TRUST="0").exbe.defaults.trust is False
    assert env_config(monkeypatch, EXBE_EXBE_DEFAULTS_TRUST="false").exbe.defaults.trust is True


def test_plain_invoke_reads_the_same_subtree_from_invoke_exbe_variables(monkeypatch):
    monkeypatch.setenv("INVOKE_EXBE_DEFAULTS_CONCURRENCY", "3")
    config = Config()
    config.load_collection(collection_config())
    config.load_shell_env()
    assert config.exbe.defaults.concurrency == 3


def test_an_inventory_cannot_come_from_an_environment_variable(monkeypatch):
    with pytest.raises(ConfigError, match="exbe.yaml") as caught:
        env_config(monkeypatch, EXBE_EXBE_INVENTORY="exch01")
    assert caught.value.exit_code == 2


def test_a_non_numeric_day_count_in_the_environment_is_a_configuration_error(monkeypatch):
    with pytest.raises(ConfigError, match="numbers must be digits"):
        env_config(monkeypatch, EXBE_EXBE_DEFAULTS_DAYS="sixty")


def _flat_keys(tree: dict, path: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys |= _flat_keys(value, f"{path}{key}.") if isinstance(value, dict) else {f"{path}{key}"}
    return keys


def test_the_configuration_doc_lists_every_variable_under_both_entry_points():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    expected = {"EXBE_EXBE_DEFAULTS_" + key.replace(".", "_").upper() for key in _flat_keys(DEFAULTS)}
    assert set(re.findall(r"`(EXBE_EXBE_DEFAULTS_\w+)`", doc)) == expected
    assert set(re.findall(r"`(INVOKE_EXBE_DEFAULTS_\w+)`", doc)) == {"INVOKE" + name[4:] for name in expected}


# --- the exbe Program and its files -----------------------------------------------------------------------------


def recording_program(seen: dict):
    @task
    def show(c):
        """Record what the task sees."""
        seen["days"] = c.config.exbe.defaults.days
        seen["servers"] = names(load_inventory(c.config.exbe))

    @task(iterable=["server"])
    def pick(c, server=None):
        """Select servers like the real tasks do."""
        seen["picked"] = names(select_servers(load_inventory(c.config.exbe), server))

    return make_program(Collection(show, pick))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A working directory holding an exbe.yaml with two servers and days: 45."""
    for name in list(os.environ):
        if name.startswith(("EXBE_", "INVOKE_")):
            monkeypatch.delenv(name)
    (tmp_path / "exbe.yaml").write_text(
        yaml.safe_dump({"exbe": {"inventory": ["exch01", "exch02"], "defaults": {"days": 45}}}), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_exbe_command_reads_exbe_yaml_from_the_working_directory(project):
    seen: dict = {}
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen == {"days": 45, "servers": ["exch01", "exch02"]}


def test_listing_tasks_works_with_a_project_file_present(project, capsys):
    recording_program({}).run(["exbe", "--list"], exit=False)
    assert "show" in capsys.readouterr().out


def test_environment_beats_the_project_file_and_dash_f_beats_both(project, monkeypatch):
    seen: dict = {}
    monkeypatch.setenv("EXBE_EXBE_DEFAULTS_DAYS", "50")
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen["days"] == 50
    (project / "override.yaml").write_text("exbe:\n  defaults:\n    days: 20\n", encoding="utf-8")
    recording_program(seen).run(["exbe", "-f", "override.yaml", "show"], exit=False)
    assert seen["days"] == 20


def test_exbe_runtime_config_names_the_dash_f_file(project, monkeypatch):
    seen: dict = {}
    (project / "pipeline.yaml").write_text("exbe:\n  defaults:\n    days: 21\n", encoding="utf-8")
    monkeypatch.setenv("EXBE_RUNTIME_CONFIG", str(project / "pipeline.yaml"))
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen["days"] == 21


def test_a_missing_dash_f_file_is_a_usage_error_not_silently_ignored(project, capsys):
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "-f", "nope.yaml", "show"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == "config file 'nope.yaml' not found"


def test_a_broken_exbe_yaml_is_one_line_and_exit_code_2(project, capsys):
    (project / "exbe.yaml").write_text("exbe: [unclosed\n", encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "show"])
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert err.startswith("cannot read exbe.yaml in ") and err.count("\n") == 1


def test_a_bad_environment_override_stops_the_command_with_exit_code_2(project, monkeypatch, capsys):
    monkeypatch.setenv("EXBE_EXBE_DEFAULTS_DAYS", "sixty")
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "show"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("an EXBE_* environment variable cannot be used")


def test_an_unknown_server_on_the_command_line_is_one_line_naming_the_known_ones(project, capsys):
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "pick", "--server", "exch09"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == "unknown server 'exch09'; known: exch01, exch02 (inventory in exbe.yaml)\n"


def test_importing_the_command_loads_no_transport_crypto_or_template_library():
    code = (
        "import sys, exbe.main, exbe.config, exbe.errors, exbe.redaction; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pypsrp', 'spnego', 'requests', 'cryptography', "
        "'jinja2', 'psrpcore'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# --- the inventory ----------------------------------------------------------------------------------------------


def test_an_entry_with_only_a_name_gets_the_winrm_and_exchange_defaults():
    [server] = inventory("exch01")
    assert server == Server(
        name="exch01", host="exch01", port=5985, ssl=False, auth="negotiate", cert_validation=True, ca_file=None,
        groups=(), exchange_host="exch01", exchange_port=80, exchange_ssl=False, exchange_path="PowerShell",
        backend_port=444, connect_timeout=30, operation_timeout=60, read_timeout=90,
    )
    assert server.winrm_url == "http://exch01:5985/wsman"
    assert server.exchange_url == "http://exch01:80/PowerShell"


def test_https_servers_default_to_the_https_ports():
    [server] = inventory({"name": "exch01", "host": "exch01.contoso.local", "ssl": True, "exchange_ssl": True})
    assert (server.port, server.exchange_port) == (5986, 443)
    assert server.exchange_host == "exch01.contoso.local"


def test_a_ca_file_becomes_what_the_transport_validates_against(tmp_path):
    ca = tmp_path / "contoso-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    [with_ca, lab] = inventory(
        {"name": "exch01", "ssl": True, "ca_file": str(ca)}, {"name": "lab01", "ssl": True, "cert_validation": False}
    )
    assert with_ca.verify == str(ca)
    assert lab.verify is False


def test_entries_take_the_configured_defaults():
    [server] = inventory("exch01", auth="kerberos", port=15985, operation_timeout=20, read_timeout=30)
    assert (server.auth, server.port, server.operation_timeout, server.read_timeout) == ("kerberos", 15985, 20, 30)


def test_basic_authentication_over_http_is_refused_as_winrm_does():
    with pytest.raises(ConfigError) as caught:
        inventory({"name": "exch01", "auth": "basic"})
    assert str(caught.value) == (
        "server 'exch01' (exbe.inventory[0]): Basic authentication over HTTP is refused, as WinRM does; set ssl: true"
    )
    with pytest.raises(ConfigError, match="set exchange_ssl: true"):
        inventory({"name": "exch01", "auth": "basic", "ssl": True})
    [server] = inventory({"name": "exch01", "auth": "basic", "ssl": True, "exchange_ssl": True})
    assert server.auth == "basic"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "exch01", "hostname": "x"}, "unknown key 'hostname'"),
        ({"name": "exch01", "port": 70000}, "port must be a port number between 1 and 65535, got 70000"),
        ({"name": "exch01", "port": "5985"}, "port must be an integer, got '5985'"),
        ({"name": "exch01", "ssl": "yes"}, "ssl must be true or false"),
        ({"name": "exch01", "auth": "digest"}, "auth must be one of negotiate, ntlm, kerberos, basic, credssp"),
        ({"name": "exch01", "groups": "dag1"}, "groups must be a list"),
        ({"host": "exch01"}, "needs a 'name'"),
        ({"name": "exch01", "ca_file": "missing.pem"}, "ca_file 'missing.pem' does not exist"),
    ],
)
def test_a_wrong_inventory_entry_is_refused_in_one_line(entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        inventory(entry)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_duplicate_server_names_are_refused_whatever_their_case():
    with pytest.raises(ConfigError, match="duplicate server name 'EXCH01'"):
        inventory("exch01", "EXCH01")


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"days": "60"}, "exbe.defaults.days must be an integer, got '60'"),
        ({"dayz": 60}, "unknown setting exbe.defaults.dayz"),
        ({"warn_days": 20, "fail_days": 30}, "fail_days (30) must not exceed warn_days (20)"),
        ({"operation_timeout": 90, "read_timeout": 90}, "must exceed operation_timeout (90); pypsrp requires it"),
        ({"smtp": "steal"}, "exbe.defaults.smtp must be one of keep, move"),
        ({"concurrency": 0}, "exbe.defaults.concurrency must be at least 1"),
        ({"sandbox": {"hosts": 0}}, "exbe.defaults.sandbox.hosts must be at least 1"),
    ],
)
def test_wrong_defaults_are_refused_in_one_line(defaults, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        defaults_dict({"defaults": defaults})


def test_defaults_fill_in_what_a_file_leaves_out():
    result = defaults_dict({"defaults": {"days": 45, "sandbox": {"hosts": 2}}})
    assert result["days"] == 45 and result["warn_days"] == 60
    assert result["sandbox"] == {**DEFAULTS["sandbox"], "hosts": 2}


def test_an_unknown_top_level_exbe_key_is_refused():
    with pytest.raises(ConfigError, match="unknown setting exbe.servers"):
        load_inventory({"servers": ["exch01"]})


# --- selecting servers ------------------------------------------------------------------------------------------


def test_nothing_selected_says_which_flags_select():
    with pytest.raises(ConfigError) as caught:
        select_servers(inventory(*FLEET), [])
    assert str(caught.value) == "no server selected: pass --server NAME, --group NAME or --all"


def test_an_unknown_server_names_itself_and_the_known_ones():
    with pytest.raises(UnknownServerError) as caught:
        select_servers(inventory(*FLEET), ["exch01", "exch09"])
    assert str(caught.value) == "unknown server 'exch09'; known: exch01, exch02, exch03 (inventory in exbe.yaml)"
    assert (caught.value.name, caught.value.known) == ("exch09", ("exch01", "exch02", "exch03"))
    assert caught.value.exit_code == 2


def test_servers_are_found_by_inventory_name_or_host_name_in_any_case():
    assert names(select_servers(inventory(*FLEET), ["EXCH02.contoso.local", "Exch01"])) == ["exch01", "exch02"]


def test_a_server_named_by_both_its_name_and_its_host_is_selected_once():
    selected = select_servers(inventory(*FLEET), ["exch01", "exch01.contoso.local", "exch01,EXCH01"])
    assert names(selected) == ["exch01"]


def test_group_selects_its_members_in_inventory_order():
    assert names(select_servers(inventory(*FLEET), group="site-b")) == ["exch02", "exch03"]


def test_group_and_server_combine_without_duplicates():
    assert names(select_servers(inventory(*FLEET), ["exch02", "exch01"], group="dag1")) == ["exch01", "exch02"]


def test_all_selects_the_whole_inventory():
    assert names(select_servers(inventory(*FLEET), all_=True)) == ["exch01", "exch02", "exch03"]


def test_an_unknown_group_names_the_known_groups():
    with pytest.raises(ConfigError, match=re.escape("unknown group 'dag9'; known groups: dag1, site-b")):
        select_servers(inventory(*FLEET), group="dag9")


def test_all_on_an_empty_inventory_says_where_servers_go():
    with pytest.raises(ConfigError, match="the inventory is empty: add servers under exbe.inventory in exbe.yaml"):
        select_servers([], all_=True)


def test_a_host_shared_by_several_entries_selects_each_of_them():
    shared = inventory({"name": "sbx1", "host": "127.0.0.1", "port": 50001}, {"name": "sbx2", "host": "127.0.0.1",
                                                                            "port": 50002})
    assert names(select_servers(shared, ["127.0.0.1"])) == ["sbx1", "sbx2"]


def test_shards_split_the_selection_without_overlap_or_loss():
    pytest.importorskip("exbe.shard")
    fleet = inventory(*[f"exch{number:02}" for number in range(1, 11)])
    shards = [names(select_servers(fleet, all_=True, shard=f"{index}/3")) for index in (1, 2, 3)]
    assert sorted(name for part in shards for name in part) == names(fleet)
    assert sum(len(part) for part in shards) == len(fleet)


# --- credentials ------------------------------------------------------------------------------------------------


def test_without_exbe_username_and_password_the_agent_logon_is_used():
    credentials = Credentials.from_env({"USERNAME": "someone", "PASSWORD": "not-ours"})
    assert credentials.uses_logon and credentials.password is None


def test_credentials_come_from_exbe_username_and_password_and_the_password_is_masked():
    credentials = Credentials.from_env({"EXBE_USERNAME": "CONTOSO\\exbe", "EXBE_PASSWORD": "Cfg-Pa55word!"})
    assert credentials.username == "CONTOSO\\exbe"
    assert isinstance(credentials.password, Secret) and credentials.password.reveal() == "Cfg-Pa55word!"
    assert "Cfg-Pa55word!" not in repr(credentials)
    assert REDACTOR.redact("login with Cfg-Pa55word!") == "login with ***"


@pytest.mark.parametrize("present", ["EXBE_USERNAME", "EXBE_PASSWORD"])
def test_half_a_credential_is_refused(present):
    with pytest.raises(ConfigError, match="set both, or neither"):
        Credentials.from_env({present: "Half-Cred3ntial"})


def test_basic_authentication_without_credentials_is_refused_before_connecting():
    servers = inventory({"name": "exch01", "auth": "basic", "ssl": True, "exchange_ssl": True})
    with pytest.raises(ConfigError, match="needs EXBE_USERNAME and EXBE_PASSWORD"):
        Credentials().check(servers)
    Credentials("admin", Secret("Pa55-for-basic")).check(servers)
