"""The inventory: the servers of ``exbe.inventory``, resolved against the settings, and the selection of a run
(``--server``, ``--group``, ``--all``, ``--shard``).

An entry is a server name, or a mapping whose keys :class:`Entry` declares (with the same mechanism as the
settings, :mod:`exbe.settings`); what an entry leaves out comes from ``exbe.defaults``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, UnknownServerError
from .settings import Defaults, Entry, Field, fields_of, read_file, resolve, shown, subtree


def _entry_fields() -> dict[str, Field]:
    return {item.name: item for item in fields_of(Entry) if isinstance(item, Field)}


@dataclasses.dataclass(frozen=True)
class Server:
    """One inventory entry with every transport setting resolved against ``exbe.defaults``."""

    name: str
    host: str
    port: int
    ssl: bool
    auth: str
    cert_validation: bool
    ca_file: str | None
    groups: tuple[str, ...]
    exchange_host: str
    exchange_port: int
    exchange_ssl: bool
    exchange_path: str
    backend_port: int
    connect_timeout: int
    operation_timeout: int
    read_timeout: int
    server_timeout: int

    @property
    def winrm_url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{url_host(self.host)}:{self.port}/wsman"

    @property
    def exchange_url(self) -> str:
        scheme = "https" if self.exchange_ssl else "http"
        return f"{scheme}://{url_host(self.exchange_host)}:{self.exchange_port}/{self.exchange_path}"

    @property
    def verify(self) -> bool | str:
        """pypsrp's ``cert_validation`` argument: the CA file when one is set, else the flag."""
        return self.ca_file if self.cert_validation and self.ca_file else self.cert_validation

    @property
    def warnings(self) -> list[str]:
        """What this server's configuration weakens, said on every run (the run's warnings, in every report)."""
        said = []
        if not self.cert_validation:
            said.append(f"TLS certificate validation is off for {self.name} (cert_validation: false in its inventory "
                        "entry): anyone on the path can pose as its endpoints; set ca_file to the CA of its "
                        "listeners instead")
        if self.auth == "credssp":
            said.append(f"{self.name} uses CredSSP, which delegates the password to the server: whoever controls "
                        "that server can use the account anywhere it has rights; prefer negotiate (Kerberos)")
        return said


def url_host(host: str) -> str:
    """``host`` as it stands in a URL or a Host header: an IPv6 literal (stored without brackets) in brackets."""
    return f"[{host}]" if ":" in host else host


#: A DNS name (RFC 1123 labels; the underscore some Active Directory names carry is allowed), at most 253 characters.
_DNS_NAME = re.compile(r"(?=.{1,253}\.?$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")


def parse_host(text: str, label: str) -> str:
    """``text`` as a host to connect to: a DNS name, an IPv4 address or an IPv6 address in brackets (returned
    without them), nothing else -- no scheme, user, port, path or query, which would send exbe (and the
    credentials) somewhere else than the entry says. A name whose last label is all digits is refused: resolvers
    read ``127.1`` or ``2130706433`` as addresses."""
    problem = ("must be a DNS name or an IP address (IPv6 in brackets, such as [fd00::5]) and nothing else: no "
               "scheme, user, port (set port), path or query")
    if text.startswith("[") and text.endswith("]"):
        try:
            address = ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise ConfigError(f"{label} {problem}, got {shown(text)}") from None
        if address.scope_id:
            raise ConfigError(f"{label} must be an IPv6 address without a zone index (%{address.scope_id}), got "
                              f"{shown(text)}")
        return str(address)
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(text))
    if not _DNS_NAME.fullmatch(text) or text.rstrip(".").rpartition(".")[2].isdigit():
        raise ConfigError(f"{label} {problem}, got {shown(text)}")
    return text


def _pick(given: Any, default: Any) -> Any:
    return default if given is None else given


def _server(raw: Any, index: int, defaults: Defaults) -> Server:
    where = f"exbe.inventory[{index}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a server name or a mapping with at least 'name', got {shown(raw)}")
    name = raw.get("name")
    known = _entry_fields()
    if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
        raise ConfigError(f"{where} needs a 'name': a non-empty string without commas or surrounding spaces")
    known["name"].checked(name, f"{where}: name")
    where = f"server {name!r} ({where})"
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {shown(unknown[0])}; known: {', '.join(known)}")
    given = {key: known[key].typed(value, f"{where}: {key}") for key, value in raw.items()}
    entry = Entry(**{key: known[key].checked(value, f"{where}: {key}") for key, value in given.items()})

    auth = _pick(entry.auth, defaults.auth)
    ssl = _pick(entry.ssl, defaults.ssl)
    exchange_ssl = _pick(entry.exchange_ssl, defaults.exchange_ssl)
    if auth == "basic" and not ssl:
        raise ConfigError(f"{where}: Basic authentication over HTTP is refused, as WinRM does; set ssl: true")
    if auth == "basic" and not exchange_ssl:
        raise ConfigError(f"{where}: Basic authentication over HTTP is refused, as WinRM does; set exchange_ssl: true")
    cert_validation = entry.cert_validation
    if auth == "basic" and not cert_validation:
        raise ConfigError(f"{where}: cert_validation: false is refused with Basic authentication, which sends the "
                          "password to whoever answers; set ca_file to the CA of the server's listeners")
    ca_file = entry.ca_file or None
    if ca_file and not cert_validation:
        raise ConfigError(f"{where}: ca_file is set but cert_validation is false; remove one of them")
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"{where}: ca_file {ca_file!r} does not exist (relative to the working directory)")
    host = parse_host(entry.host or name, f"{where}: host" if entry.host else f"{where}: name (the default host)")
    exchange_host = parse_host(entry.exchange_host, f"{where}: exchange_host") if entry.exchange_host else host
    exchange_port = defaults.exchange_ssl_port if exchange_ssl else defaults.exchange_port
    return Server(
        name=name,
        host=host,
        port=_pick(entry.port, defaults.ssl_port if ssl else defaults.port),
        ssl=ssl,
        auth=auth,
        cert_validation=cert_validation,
        ca_file=ca_file,
        groups=entry.groups,
        exchange_host=exchange_host,
        exchange_port=_pick(entry.exchange_port, exchange_port),
        exchange_ssl=exchange_ssl,
        exchange_path=_pick(entry.exchange_path, defaults.exchange_path).strip("/"),
        backend_port=_pick(entry.backend_port, defaults.backend_port),
        connect_timeout=defaults.connect_timeout,
        operation_timeout=defaults.operation_timeout,
        read_timeout=defaults.read_timeout,
        server_timeout=defaults.server_timeout,
    )


def servers(entries: Any, defaults: Defaults) -> list[Server]:
    """The validated servers of ``entries`` (``exbe.inventory``) in file order, with ``defaults`` filled in."""
    if not isinstance(entries, list):
        raise ConfigError("exbe.inventory must be a list of servers (it cannot come from an environment variable)")
    result = [_server(raw, index, defaults) for index, raw in enumerate(entries)]
    seen: set[str] = set()
    for server in result:
        if server.name.lower() in seen:
            raise ConfigError(f"duplicate server name {server.name!r} in exbe.inventory (names are case-insensitive)")
        seen.add(server.name.lower())
    return result


def load_inventory(exbe_cfg: Any, defaults: Defaults | None = None) -> list[Server]:
    """The validated inventory of an ``exbe:`` subtree (``c.config.exbe``, or a document's ``exbe``).

    Without ``defaults``, the subtree's own ``exbe.defaults`` apply (environment and flags are
    :func:`exbe.config.load`'s business: a task passes the defaults it resolved).
    """
    tree = subtree(exbe_cfg)
    if defaults is None:
        defaults = resolve(read_file(tree.get("defaults")))
    return servers(tree.get("inventory", []), defaults)


def _matches(token: str, server: Server) -> bool:
    return token.lower() in (server.name.lower(), server.host.lower(), url_host(server.host).lower())


def select_servers(
    inventory: list[Server],
    names: Iterable[str] | None = None,
    all_: bool = False,
    group: str | None = None,
    shard: str | None = None,
) -> list[Server]:
    """The servers named by ``--server`` (repeatable or comma-separated), ``--group`` and ``--all``, in inventory order.

    ``--server`` matches inventory names and host names, case-insensitively (a host shared by several entries
    selects them all); a server named twice (by its name and its host, say) is selected once. ``--shard i/n``
    then keeps this run's share of the selection (which may be empty when there are more shards than servers).
    """
    tokens = [token.strip() for value in names or () for token in value.split(",") if token.strip()]
    if not tokens and not all_ and not group:
        raise ConfigError("no server selected: pass --server NAME, --group NAME or --all")
    if not inventory:
        raise ConfigError("the inventory is empty: add servers under exbe.inventory in exbe.yaml")
    chosen: set[str] = set()
    for token in tokens:
        matching = [server.name for server in inventory if _matches(token, server)]
        if not matching:
            raise UnknownServerError(token, [server.name for server in inventory])
        chosen.update(matching)
    if group:
        members = [server.name for server in inventory if group.lower() in (g.lower() for g in server.groups)]
        if not members:
            known_groups = sorted({g for server in inventory for g in server.groups})
            known = ", ".join(known_groups) if known_groups else "none"
            raise ConfigError(f"unknown group {group!r}; known groups: {known} (inventory in exbe.yaml)")
        chosen.update(members)
    if all_:
        chosen.update(server.name for server in inventory)
    selected = [server for server in inventory if server.name in chosen]
    if shard:
        from .shard import parse_shard
        from .shard import shard as shard_of

        index, count = parse_shard(shard)
        mine = set(shard_of([server.name for server in selected], index, count))
        selected = [server for server in selected if server.name in mine]
    return selected
