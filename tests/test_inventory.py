"""The inventory an admin writes in exbe.yaml, and how --server, --group, --all and --shard pick from it."""

from __future__ import annotations

import re

import pytest

from exbe.config import load
from exbe.errors import ConfigError, UnknownServerError
from exbe.inventory import Server, load_inventory, select_servers, servers


def inventory(*entries: object, **defaults: object) -> list[Server]:
    return load_inventory({"inventory": list(entries), "defaults": defaults})


FLEET = [
    {"name": "exch01", "host": "exch01.contoso.local", "groups": ["dag1"]},
    {"name": "exch02", "host": "exch02.contoso.local", "groups": ["dag1", "site-b"]},
    {"name": "exch03", "host": "exch03.contoso.local", "groups": ["site-b"]},
]


def names(chosen: list[Server]) -> list[str]:
    return [server.name for server in chosen]


# --- entries ----------------------------------------------------------------------------------------------------


def test_an_entry_with_only_a_name_gets_the_winrm_and_exchange_defaults():
    [server] = inventory("exch01")
    assert server == Server(
        name="exch01", host="exch01", port=5985, ssl=False, auth="negotiate", cert_validation=True, ca_file=None,
        groups=(), exchange_host="exch01", exchange_port=80, exchange_ssl=False, exchange_path="PowerShell",
        backend_port=444, connect_timeout=30, operation_timeout=60, read_timeout=90, server_timeout=600,
    )
    assert server.winrm_url == "http://exch01:5985/wsman"
    assert server.exchange_url == "http://exch01:80/PowerShell"
    assert server.warnings == []


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


def test_entries_take_settings_from_the_environment_once_a_task_resolved_them():
    loaded = load({"exbe": {"inventory": ["exch01"]}}, {"EXBE_PORT": "15985", "EXBE_AUTH": "ntlm"})
    [server] = servers(loaded.inventory, loaded.defaults)
    assert (server.port, server.auth) == (15985, "ntlm")


def test_what_an_entry_says_beats_the_defaults():
    [server] = inventory({"name": "exch01", "port": 1234, "auth": "ntlm", "exchange_path": "/PowerShell/"},
                         port=15985, auth="kerberos")
    assert (server.port, server.auth, server.exchange_path) == (1234, "ntlm", "PowerShell")


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
        ({"name": "exch01", "groups": ["dag1", ""]}, "groups must be a list of names"),
        ({"name": "exch01", "exchange_path": ""}, "exchange_path must be a URL path"),
        ({"host": "exch01"}, "needs a 'name'"),
        ({"name": "exch01,exch02"}, "needs a 'name'"),
        ({"name": "exch01", "ca_file": "missing.pem"}, "ca_file 'missing.pem' does not exist"),
        ({"name": "exch01", "ca_file": "ca.pem", "cert_validation": False}, "ca_file is set but cert_validation is "
                                                                             "false"),
        (42, "exbe.inventory[0] must be a server name or a mapping"),
    ],
)
def test_a_wrong_inventory_entry_is_refused_in_one_line(entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        inventory(entry)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


# --- hosts, names and paths: what the entry says, nothing else -------------------------------------------------------


@pytest.mark.parametrize(("host", "kept"), [
    ("exch01", "exch01"), ("exch01.contoso.local", "exch01.contoso.local"),
    ("EXCH01.Contoso.Local.", "EXCH01.Contoso.Local."),
    ("ex_ch01.corp", "ex_ch01.corp"), ("192.0.2.10", "192.0.2.10"), ("[fd00::5]", "fd00::5"),
    ("[2001:DB8::1]", "2001:db8::1"),
])
def test_a_host_is_a_dns_name_or_an_ip_address(host, kept):
    [server] = inventory({"name": "exch01", "host": host, "exchange_host": host})
    assert (server.host, server.exchange_host) == (kept, kept)


def test_an_ipv6_host_goes_into_urls_in_brackets_and_is_selected_as_written():
    [server] = inventory({"name": "exch01", "host": "[fd00::5]", "port": 5986, "ssl": True})
    assert server.winrm_url == "https://[fd00::5]:5986/wsman"
    assert server.exchange_url == "http://[fd00::5]:80/PowerShell"
    assert names(select_servers([server], ["[FD00::5]"])) == names(select_servers([server], ["fd00::5"])) == ["exch01"]


@pytest.mark.parametrize("host", [
    "127.0.0.1:5985/wsman?", "127.0.0.1:5985", "evil@127.0.0.1", "user:pw@exch01", "http://exch01", "exch01/wsman",
    "exch01?x=1", "exch01#frag", "fd00::5", "[fd00::5]:5985", "[fe80::1%eth0]", "[exch01]", "127.1", "2130706433",
    "999.1.1.1", "01.2.3.4", "exch 01", "exch01\x00", "-exch01", "exch01-.contoso", "a..b", "ex%41ch01", "exch\u00e9",
    "a" * 64, ".".join(["a" * 63] * 5),
])
def test_a_host_with_anything_else_is_refused_naming_the_entry(host):
    """``127.0.0.1:<port>/wsman?`` once made exbe ignore the configured port and check another server under this
    one's name; ``evil@127.0.0.1`` was accepted (issue 13, finding 4)."""
    for key in ("host", "exchange_host"):
        with pytest.raises(ConfigError) as caught:
            inventory({"name": "exch01", key: host})
        message = str(caught.value)
        assert message.startswith(f"server 'exch01' (exbe.inventory[0]): {key} must") and "\n" not in message
        assert caught.value.exit_code == 2


def test_a_name_that_cannot_be_a_host_is_refused_as_the_default_host():
    with pytest.raises(ConfigError, match=re.escape("server 'exch01:5985' (exbe.inventory[0]): name (the default host) "
                                                    "must be a DNS name or an IP address")):
        inventory("exch01:5985")
    [server] = inventory({"name": "exch01:5985", "host": "exch01"})
    assert server.host == "exch01"


@pytest.mark.parametrize("name", ["exch\x0001", "exch01\x1b[31m", "exch\u202e10", "exch\t01", "a" * 64,
                                  "exch\u200b01"])
def test_a_server_name_is_printable_and_at_most_63_characters(name):
    """Control characters in a server name crashed the run inside pypsrp (issue 13, finding 5)."""
    with pytest.raises(ConfigError) as caught:
        inventory({"name": name, "host": "exch01"})
    message = str(caught.value)
    assert message.startswith("exbe.inventory[0]: name must") and message.isprintable()
    [server] = inventory({"name": "a" * 63, "host": "exch01"})
    assert server.name == "a" * 63


@pytest.mark.parametrize(("key", "value"), [("groups", ["dag\x001"]), ("groups", ["g" * 64]), ("ca_file", "ca\n.pem"),
                                            ("exchange_path", "PowerShell?x=1"), ("exchange_path", "../wsman"),
                                            ("exchange_path", "Power%53hell"), ("exchange_path", "Power\x00Shell")])
def test_other_text_keys_refuse_control_characters_and_url_parts(key, value):
    with pytest.raises(ConfigError, match=re.escape(f"server 'exch01' (exbe.inventory[0]): {key} must")):
        inventory({"name": "exch01", key: value})


def test_a_huge_value_is_shown_cut_short_in_the_error():
    with pytest.raises(ConfigError) as caught:
        inventory({"name": "exch01", "host": "x" * 100_000})
    assert len(str(caught.value)) < 400 and "(100000 characters)" in str(caught.value)


# --- TLS validation: off only where named, and always said ----------------------------------------------------------


def test_tls_validation_is_switched_off_per_server_and_each_run_says_so():
    lab, production = inventory({"name": "lab01", "ssl": True, "cert_validation": False}, "exch01")
    assert (lab.verify, production.verify) == (False, True)
    [warning] = lab.warnings
    assert warning.startswith("TLS certificate validation is off for lab01 (cert_validation: false in its inventory "
                              "entry)") and "ca_file" in warning
    assert production.warnings == []


@pytest.mark.parametrize("source", ["file", "environment"])
def test_tls_validation_cannot_be_switched_off_for_the_whole_fleet(source):
    with pytest.raises(ConfigError) as caught:
        if source == "file":
            load({"exbe": {"inventory": ["exch01"], "defaults": {"cert_validation": False}}}, {})
        else:
            load({"exbe": {"inventory": ["exch01"]}}, {"EXBE_CERT_VALIDATION": "false"})
    label = "exbe.defaults.cert_validation" if source == "file" else "EXBE_CERT_VALIDATION"
    assert str(caught.value) == (
        f"{label} is refused: TLS certificate validation cannot be switched off for the whole fleet; set "
        "cert_validation: false on the inventory entry of each server that needs it (a lab), or better, ca_file")
    assert caught.value.exit_code == 2


def test_tls_validation_off_is_refused_with_basic_authentication():
    with pytest.raises(ConfigError) as caught:
        inventory({"name": "lab01", "auth": "basic", "ssl": True, "exchange_ssl": True, "cert_validation": False})
    assert str(caught.value).startswith("server 'lab01' (exbe.inventory[0]): cert_validation: false is refused with "
                                        "Basic authentication")


# --- CredSSP: only where configured, and always said ---------------------------------------------------------------


def test_credssp_is_used_only_where_configured_and_each_run_says_it_delegates_the_password():
    defaulted, named, fleet_wide = (inventory("exch01")[0], inventory({"name": "exch01", "auth": "credssp"})[0],
                                    inventory("exch01", auth="credssp")[0])
    assert defaulted.auth == "negotiate" and defaulted.warnings == []
    for server in (named, fleet_wide):
        [warning] = server.warnings
        assert warning.startswith("exch01 uses CredSSP, which delegates the password to the server")


def test_a_wrong_entry_names_the_server_and_its_place():
    with pytest.raises(ConfigError) as caught:
        inventory("exch01", {"name": "exch02", "port": 0})
    assert str(caught.value).startswith("server 'exch02' (exbe.inventory[1]): port must be a port number")


def test_duplicate_server_names_are_refused_whatever_their_case():
    with pytest.raises(ConfigError, match="duplicate server name 'EXCH01'"):
        inventory("exch01", "EXCH01")


def test_an_inventory_that_is_not_a_list_is_refused():
    with pytest.raises(ConfigError, match="exbe.inventory must be a list of servers"):
        load_inventory({"inventory": "exch01"})


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
    fleet = inventory(*[f"exch{number:02}" for number in range(1, 11)])
    shards = [names(select_servers(fleet, all_=True, shard=f"{index}/3")) for index in (1, 2, 3)]
    assert sorted(name for part in shards for name in part) == names(fleet)
    assert sum(len(part) for part in shards) == len(fleet)


def test_the_config_module_still_offers_the_inventory_names_other_modules_import():
    import exbe.config

    assert (exbe.config.Server, exbe.config.load_inventory, exbe.config.select_servers) == (
        Server, load_inventory, select_servers)
