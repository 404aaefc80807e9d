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
        ({"name": "exch01", "exchange_path": ""}, "exchange_path must not be empty"),
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
