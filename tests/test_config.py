"""Configuration as an Exchange admin meets it: exbe.yaml, EXBE_<SETTING> variables, task flags, credentials."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from invoke import Collection, Config, task

from exbe.config import Credentials, ExbeConfig, collection_config, load
from exbe.errors import ConfigError
from exbe.inventory import load_inventory
from exbe.main import make_program
from exbe.redaction import REDACTOR, Secret
from exbe.settings import Defaults, SandboxDefaults
from exbe.tasks import ns

ROOT = Path(__file__).resolve().parent.parent


def settings(defaults: dict | None = None, env: dict | None = None, **flags: object) -> Defaults:
    """The settings a task would run with, given a file's ``exbe.defaults``, the environment and task flags
    (``days="45"`` stands for ``--days 45``)."""
    given = {"--" + name.replace("_", "-"): value for name, value in flags.items()}
    return load({"exbe": {"defaults": defaults or {}}}, env or {}, given).defaults


# --- environment variables: one flat scheme for both entry points -----------------------------------------------


def test_days_threshold_is_set_with_exbe_days():
    assert settings(env={"EXBE_DAYS": "45"}).days == 45


def test_nested_sandbox_settings_take_flat_names_too():
    sandbox = settings(env={"EXBE_SANDBOX_HOSTS": "10", "EXBE_SANDBOX_FAULTS": "bind"}).sandbox
    assert (sandbox.hosts, sandbox.faults) == (10, "bind")


@pytest.mark.parametrize(("text", "value"), [("false", False), ("FALSE", False), ("0", False), ("no", False),
                                             ("true", True), ("True", True), ("1", True), ("yes", True)])
def test_boolean_variables_accept_the_usual_spellings(text, value):
    assert settings(env={"EXBE_TRUST": text}).trust is value


def test_trust_false_in_the_environment_turns_trust_off():
    assert settings(env={"EXBE_TRUST": "false"}).trust is False


def test_a_boolean_variable_that_is_no_boolean_is_one_line_saying_what_it_takes():
    with pytest.raises(ConfigError) as caught:
        settings(env={"EXBE_TRUST": "maybe"})
    assert str(caught.value).startswith("EXBE_TRUST must be true or false (or 1/0, yes/no, on/off), got 'maybe'")
    assert caught.value.exit_code == 2


def test_a_non_numeric_day_count_in_the_environment_names_the_variable_and_an_example():
    with pytest.raises(ConfigError) as caught:
        settings(env={"EXBE_DAYS": "sixty"})
    assert str(caught.value) == ("EXBE_DAYS must be an integer, got 'sixty' (for example EXBE_DAYS=60; renew when "
                                 "fewer days are left)")


def test_a_negative_day_count_in_the_environment_is_refused():
    with pytest.raises(ConfigError, match=re.escape("EXBE_DAYS must not be negative, got -5")):
        settings(env={"EXBE_DAYS": "-5"})


def test_an_empty_variable_counts_as_unset():
    assert settings({"days": 45}, env={"EXBE_DAYS": "", "EXBE_TRUST": ""}) == dataclasses.replace(Defaults(), days=45)


@pytest.mark.parametrize(("name", "instead"), [("EXBE_EXBE_DEFAULTS_DAYS", "EXBE_DAYS"),
                                               ("INVOKE_EXBE_DEFAULTS_TRUST", "EXBE_TRUST"),
                                               ("EXBE_EXBE_DEFAULTS_SANDBOX_HOSTS", "EXBE_SANDBOX_HOSTS")])
def test_the_former_variable_names_are_refused_with_the_name_to_use(name, instead):
    with pytest.raises(ConfigError) as caught:
        settings(env={name: "0"})
    assert str(caught.value) == f"{name} is no longer read: set {instead} instead (docs/configuration.md)"


def test_an_inventory_cannot_come_from_an_environment_variable():
    with pytest.raises(ConfigError, match="exbe.yaml") as caught:
        settings(env={"EXBE_EXBE_INVENTORY": "exch01"})
    assert caught.value.exit_code == 2


def test_an_unknown_exbe_variable_is_warned_about_with_a_guess():
    loaded = load({"exbe": {}}, {"EXBE_DAIS": "45"})
    assert loaded.defaults.days == 60
    assert loaded.warnings == ("EXBE_DAIS is not a variable exbe reads, ignored; did you mean EXBE_DAYS? "
                               "(docs/configuration.md lists them)",)


def test_credentials_and_exbes_other_variables_are_not_warned_about():
    env = {"EXBE_USERNAME": "admin", "EXBE_PASSWORD": "x", "EXBE_RUNTIME_CONFIG": "a.yaml", "PATH": "/bin"}
    assert load({"exbe": {}}, env).warnings == ()


def test_plain_invoke_reads_the_same_exbe_variables():
    config = Config()
    config.load_collection(collection_config())
    config.load_shell_env()
    assert load(config, {"EXBE_CONCURRENCY": "3", "EXBE_TRUST": "no"}).defaults.concurrency == 3


def test_the_exbe_command_leaves_invokes_derived_variables_alone(monkeypatch):
    monkeypatch.setenv("EXBE_EXBE_DEFAULTS_DAYS", "45")
    config = ExbeConfig()
    config.load_shell_env()  # Invoke would cast this onto exbe.defaults.days; exbe refuses it at task time instead
    assert dict(config.exbe.defaults) == {}


# --- the exbe Program and its files -----------------------------------------------------------------------------


def recording_program(seen: dict):
    @task
    def show(c):
        """Record what the task sees."""
        loaded = load(c.config)
        seen["days"] = loaded.defaults.days
        seen["servers"] = [server.name for server in load_inventory(c.config.exbe, loaded.defaults)]

    @task(iterable=["server"])
    def pick(c, server=None):
        """Select servers like the real tasks do."""
        from exbe.inventory import select_servers

        seen["picked"] = [s.name for s in select_servers(load_inventory(c.config.exbe), server)]

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
    monkeypatch.setenv("EXBE_DAYS", "50")
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen["days"] == 50
    (project / "override.yaml").write_text("exbe:\n  defaults:\n    days: 20\n", encoding="utf-8")
    recording_program(seen).run(["exbe", "-f", "override.yaml", "show"], exit=False)
    assert seen["days"] == 20


def test_the_environment_still_sets_what_the_dash_f_file_leaves_out(project, monkeypatch):
    (project / "override.yaml").write_text("exbe:\n  defaults:\n    warn_days: 70\n", encoding="utf-8")
    monkeypatch.setenv("EXBE_DAYS", "50")
    seen: dict = {}
    recording_program(seen).run(["exbe", "-f", "override.yaml", "show"], exit=False)
    assert seen["days"] == 50


def test_plain_invoke_in_a_checkout_reads_exbe_days_like_the_exbe_command(project):
    (project / "invoke.yaml").write_text((project / "exbe.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (project / "tasks.py").write_text(
        "from invoke import Collection, task\n"
        "from exbe.config import collection_config, load\n"
        "from exbe.inventory import load_inventory\n"
        "@task\n"
        "def show(c):\n"
        "    loaded = load(c.config)\n"
        "    print(loaded.defaults.days, [s.name for s in load_inventory(c.config.exbe, loaded.defaults)])\n"
        "ns = Collection(show)\n"
        "ns.configure(collection_config())\n", encoding="utf-8")
    env = {**os.environ, "EXBE_DAYS": "50", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "invoke", "show"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "50 ['exch01', 'exch02']", result.stderr


def test_exbe_runtime_config_names_the_dash_f_file(project, monkeypatch):
    seen: dict = {}
    (project / "pipeline.yaml").write_text("exbe:\n  defaults:\n    days: 21\n", encoding="utf-8")
    monkeypatch.setenv("EXBE_RUNTIME_CONFIG", str(project / "pipeline.yaml"))
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen["days"] == 21


def test_the_exbe_command_does_not_read_invokes_runtime_config_variable(project, monkeypatch):
    seen: dict = {}
    (project / "pipeline.yaml").write_text("exbe:\n  defaults:\n    days: 21\n", encoding="utf-8")
    monkeypatch.setenv("INVOKE_RUNTIME_CONFIG", str(project / "pipeline.yaml"))
    recording_program(seen).run(["exbe", "show"], exit=False)
    assert seen["days"] == 45


def test_a_missing_dash_f_file_is_a_usage_error_not_silently_ignored(project, capsys):
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "-f", "nope.yaml", "show"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == "config file 'nope.yaml' not found"


@pytest.mark.parametrize(("where", "name", "text", "said"), [
    ("project", "exbe.yaml", "exbe: [unclosed\n", "it is not valid YAML: "),
    ("home", ".exbe.yaml", "exbe: {inventory: [exch01\n", "it is not valid YAML: "),
    ("flag", "pipeline.json", '{"exbe": {"inventory": ["exch01",]}}', "it is not valid JSON: "),
])
def test_a_configuration_file_with_a_syntax_error_is_one_line_naming_it_and_exit_code_2(
        project, tmp_path_factory, monkeypatch, capsys, where, name, text, said):
    """Wherever Invoke found the file: ~/.exbe.yaml with a syntax error was a traceback and exit code 1."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    path = {"project": project, "home": home, "flag": project}[where] / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", *(["-f", str(path)] if where == "flag" else []), "show"])
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert err.startswith("cannot read config file '") and err.count("\n") == 1, err
    assert f"{os.sep}{name}'" in err, "the file's name, whatever the length of its folder's path"
    assert said in err
    assert re.search(r"line \d+,? column \d+", err), "where in the file YAML or JSON stopped"


def test_a_bad_environment_override_stops_the_command_with_exit_code_2(project, monkeypatch, capsys):
    monkeypatch.setenv("EXBE_DAYS", "sixty")
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "show"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("EXBE_DAYS must be an integer, got 'sixty'")


def test_an_unknown_server_on_the_command_line_is_one_line_naming_the_known_ones(project, capsys):
    with pytest.raises(SystemExit) as caught:
        recording_program({}).run(["exbe", "pick", "--server", "exch09"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == "unknown server 'exch09'; known: exch01, exch02 (inventory in exbe.yaml)\n"


def test_importing_the_command_loads_no_transport_crypto_or_template_library():
    code = (
        "import sys, exbe.main, exbe.config, exbe.settings, exbe.inventory, exbe.errors, exbe.redaction; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pypsrp', 'spnego', 'requests', 'cryptography', "
        "'jinja2', 'psrpcore'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_the_task_collection_carries_the_shape_of_the_subtree_not_a_copy_of_the_defaults():
    assert ns.configuration() == {"exbe": {"inventory": [], "defaults": {}}}


# --- settings in files, and their validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"days": "60"}, "exbe.defaults.days must be an integer, got '60'"),
        ({"days": -1}, "exbe.defaults.days must not be negative, got -1"),
        ({"dayz": 60}, "unknown setting exbe.defaults.dayz"),
        ({"warn_days": 20, "fail_days": 30}, "exbe.defaults.fail_days (30) must not exceed warn_days (20)"),
        ({"operation_timeout": 90, "read_timeout": 90}, "must exceed operation_timeout (90); pypsrp requires it"),
        ({"smtp": "steal"}, "exbe.defaults.smtp must be one of keep, move"),
        ({"auth": "digest"}, "exbe.defaults.auth must be one of negotiate, ntlm, kerberos, basic, credssp"),
        ({"concurrency": 0}, "exbe.defaults.concurrency must be at least 1"),
        ({"port": 0}, "exbe.defaults.port must be a port number between 1 and 65535, got 0"),
        ({"trust": "no"}, "exbe.defaults.trust must be true or false, got 'no'"),
        ({"friendly_name": " "}, "exbe.defaults.friendly_name must not be empty"),
        ({"friendly_name": "x" * 64}, "exbe.defaults.friendly_name must be printable and at most 63 characters long"),
        ({"friendly_name": "Microsoft\x00Exchange"}, "exbe.defaults.friendly_name must not contain control "
                                                      "characters, got 'Microsoft\\x00Exchange'"),
        ({"backend_site": "Exchange\nBack End"}, "exbe.defaults.backend_site must not contain control characters"),
        ({"exchange_path": "PowerShell?a=b"}, "exbe.defaults.exchange_path must be a URL path"),
        ({"sandbox": {"faults": "x\x1by"}}, "exbe.defaults.sandbox.faults must not contain control characters"),
        ({"sandbox": {"hosts": 0}}, "exbe.defaults.sandbox.hosts must be at least 1"),
        ({"sandbox": 3}, "exbe.defaults.sandbox must be a mapping, got 3"),
    ],
)
def test_wrong_settings_in_a_file_are_refused_in_one_line(defaults, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        settings(defaults)
    assert "\n" not in str(caught.value)


def test_a_relation_between_settings_names_where_each_value_came_from():
    with pytest.raises(ConfigError) as caught:
        settings({"warn_days": 40}, env={"EXBE_FAIL_DAYS": "45"})
    assert str(caught.value) == "EXBE_FAIL_DAYS (45) must not exceed warn_days (40)"


def test_the_removed_reports_dir_is_refused_with_what_to_do_instead():
    with pytest.raises(ConfigError) as caught:
        settings({"reports_dir": "reports"})
    assert str(caught.value) == ("exbe.defaults.reports_dir was removed: it never did anything; pass --junit PATH "
                                 "and --json PATH to write reports; delete it from the file")


def test_defaults_fill_in_what_a_file_leaves_out():
    result = settings({"days": 45, "sandbox": {"hosts": 2}})
    assert result.days == 45 and result.warn_days == 60
    assert result.sandbox == dataclasses.replace(SandboxDefaults(), hosts=2)


def test_an_unknown_top_level_exbe_key_is_refused():
    with pytest.raises(ConfigError, match="unknown setting exbe.servers"):
        load({"exbe": {"servers": ["exch01"]}}, {})


# --- task flags override settings -------------------------------------------------------------------------------


def test_a_flag_beats_the_environment_and_the_files():
    assert settings({"days": 50}, env={"EXBE_DAYS": "45"}, days="30").days == 30


def test_boolean_flags_set_the_opposite_of_the_default():
    result = settings({"trust": True}, no_trust=True, restart_iis=True)
    assert (result.trust, result.restart_iis) == (False, True)
    assert settings({"restart_iis": True}, restart_iis=False).restart_iis is True


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("days", "abc", "--days must be an integer, got 'abc' (for example --days 60; renew when fewer days are "
                        "left)"),
        ("days", "-5", "--days must not be negative, got -5 (for example --days 60; renew when fewer days are left)"),
        ("min_age", "x", "--min-age must be an integer, got 'x' (for example --min-age 7; days a switch must be old "
                         "before cleanup removes the certificate it replaced)"),
        ("smtp", "steal", "--smtp must be one of keep, move, got 'steal' (for example --smtp keep; keep SMTP on the "
                          "old certificate, or move it to the new one)"),
    ],
)
def test_a_bad_flag_value_is_one_line_saying_what_it_takes(flag, value, message):
    with pytest.raises(ConfigError) as caught:
        settings(**{flag: value})
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", ["Microsoft\x00Exchange", "Microsoft\x1b[2JExchange", "Microsoft\u202eExchange",
                                  "Microsoft\x7fExchange", "Microsoft\x9bExchange", "Microsoft\u2028Exchange"])
def test_control_characters_are_refused_in_a_string_setting_from_every_source(text):
    """A NUL, an escape sequence or a bidi override in a setting would reach PowerShell parameters, URLs, log lines and
    reports; each source is refused the same way, naming itself."""
    for label, given in [("exbe.defaults.friendly_name", {"defaults": {"friendly_name": text}}),
                         ("EXBE_FRIENDLY_NAME", {"env": {"EXBE_FRIENDLY_NAME": text}}),
                         ("EXBE_TEMPLATE_DIR", {"env": {"EXBE_TEMPLATE_DIR": text}}),
                         ("--smtp", {"smtp": text})]:
        with pytest.raises(ConfigError) as caught:
            settings(**given)
        message = str(caught.value)
        assert message.startswith(f"{label} must") and message.isprintable(), message
        assert caught.value.exit_code == 2


def test_a_friendly_name_is_bounded_as_new_exchangecertificate_requires():
    """Microsoft's New-ExchangeCertificate documentation: the FriendlyName value must be less than 64 characters (100 KB
    once reached the cmdlet)."""
    assert settings({"friendly_name": "F" * 63}).friendly_name == "F" * 63
    with pytest.raises(ConfigError, match=r"\(100000 characters\)"):
        settings(env={"EXBE_FRIENDLY_NAME": "F" * 100_000})


def test_a_template_directory_from_the_environment_is_warned_about_on_every_run(tmp_path):
    from_env = load({"exbe": {}}, {"EXBE_TEMPLATE_DIR": str(tmp_path)})
    assert from_env.defaults.template_dir == str(tmp_path)
    assert from_env.warnings == (
        f"the template override directory comes from the environment (EXBE_TEMPLATE_DIR={tmp_path}): its templates "
        "become the scripts exbe runs on every server; set exbe.defaults.template_dir in the configuration file "
        "instead",)
    assert load({"exbe": {"defaults": {"template_dir": str(tmp_path)}}}, {}).warnings == ()


# --- credentials ------------------------------------------------------------------------------------------------


def test_a_user_name_with_control_characters_is_refused():
    with pytest.raises(ConfigError, match=re.escape("EXBE_USERNAME must not contain control characters, got "
                                                    "'CONTOSO\\\\admin\\n'")):
        Credentials.from_env({"EXBE_USERNAME": "CONTOSO\\admin\n", "EXBE_PASSWORD": "Pa55-word-ctl"})


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
    servers = load_inventory({"inventory": [{"name": "exch01", "auth": "basic", "ssl": True, "exchange_ssl": True}]})
    with pytest.raises(ConfigError, match="needs EXBE_USERNAME and EXBE_PASSWORD"):
        Credentials().check(servers)
    Credentials("admin", Secret("Pa55-for-basic")).check(servers)
