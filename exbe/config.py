"""exbe's configuration: Invoke's config system, the inventory, server selection and credentials.

Everything lives in one ``exbe:`` subtree::

    exbe:
      inventory:                      # a list: only from files, never from environment variables
        - {name: exch01, host: exch01.contoso.local, groups: [dag1]}
      defaults: {days: 60, concurrency: 8, ...}   # see DEFAULTS

Where it is read from (Invoke's hierarchy, lowest first): defaults below < ``/etc/exbe.yaml`` < ``~/.exbe.yaml`` <
``./exbe.yaml`` (the working directory; the ``exbe`` Program loads it itself, see ``exbe.main``) < environment
variables < ``-f FILE`` (or ``EXBE_RUNTIME_CONFIG``) < command-line flags. Under plain ``invoke`` with the project's
``tasks.py`` the same subtree sits in ``invoke.yaml`` and the defaults come from ``Collection.configure``.

Environment variables follow Invoke's rules, which bite:

* The name is the prefix, then the key path joined by ``_`` and upper-cased. Under the ``exbe`` command the prefix
  is ``EXBE_`` and the subtree is itself called ``exbe``, so ``exbe.defaults.days`` is ``EXBE_EXBE_DEFAULTS_DAYS``;
  under ``invoke`` it is ``INVOKE_EXBE_DEFAULTS_DAYS``. The sandbox keys are ``EXBE_EXBE_DEFAULTS_SANDBOX_HOSTS``
  and so on.
* A variable only overrides a key that already exists, and is cast by the type of its current value: integers
  must be digits; booleans are false for ``0`` or empty and TRUE FOR ANYTHING ELSE (``false`` included).
* Lists (``exbe.inventory``) cannot come from the environment at all.
* Two key paths that join to the same name raise ``AmbiguousEnvVar`` for every run, so no key here contains the
  path of another (``exchange_port`` is fine only because there is no ``exchange: {port}``).
* ``EXBE_USERNAME`` and ``EXBE_PASSWORD`` are not configuration keys: credentials come only from those two
  variables (:meth:`Credentials.from_env`), never from files or flags.

``docs/configuration.md`` lists every variable.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from invoke.config import Config, merge_dicts
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar

from exbe.errors import ConfigError, UnknownServerError
from exbe.redaction import REDACTOR, Secret

AUTH_METHODS = ("negotiate", "ntlm", "kerberos", "basic", "credssp")
SMTP_MODES = ("keep", "move")

#: Typed defaults: each key's type is the type its environment variable is cast to, and the only type accepted.
DEFAULTS: dict[str, Any] = {
    "days": 60,  # renew when fewer days are left
    "warn_days": 60,  # verify warns below this many days
    "fail_days": 30,  # verify fails below this many days
    "concurrency": 8,  # servers worked on at once
    "connect_timeout": 30,
    "operation_timeout": 60,
    "read_timeout": 90,  # must exceed operation_timeout (pypsrp)
    "min_age_days": 7,  # cleanup waits this long after the switch
    "smtp": "keep",  # keep | move
    "trust": True,  # copy the new certificate to LocalMachine\Root
    "restart_iis": False,
    "auth": "negotiate",
    "port": 5985,  # WinRM over HTTP
    "ssl_port": 5986,  # WinRM over HTTPS, used when a server has ssl: true and no port
    "ssl": False,
    "cert_validation": True,
    "exchange_port": 80,
    "exchange_ssl_port": 443,  # used when a server has exchange_ssl: true and no exchange_port
    "exchange_ssl": False,
    "exchange_path": "PowerShell",
    "backend_port": 444,  # Exchange Back End's https port, probed from the agent by verify
    "backend_site": "Exchange Back End",
    "frontend_site": "Default Web Site",
    "friendly_name": "Microsoft Exchange",
    "template_dir": "",  # a directory whose templates override the shipped ones
    "reports_dir": "reports",
    "sandbox": {"hosts": 6, "scenarios": "mixed", "state_dir": ".exbe-sandbox", "faults": "", "latency_ms": 0,
                "fresh": True},
}

#: Keys of one inventory entry and their types.
ENTRY_KEYS: dict[str, type] = {
    "name": str,
    "host": str,
    "port": int,
    "ssl": bool,
    "auth": str,
    "cert_validation": bool,
    "ca_file": str,
    "groups": list,
    "exchange_host": str,
    "exchange_port": int,
    "exchange_ssl": bool,
    "exchange_path": str,
    "backend_port": int,
}


def collection_config() -> dict[str, Any]:
    """What ``tasks.py`` passes to ``ns.configure(...)`` so that plain ``invoke`` knows (and types) every key."""
    return {"exbe": {"inventory": [], "defaults": copy.deepcopy(DEFAULTS)}}


class ExbeConfig(Config):
    """Invoke's Config for the ``exbe`` command: files ``exbe.yaml``/``exbe.json``, variables ``EXBE_...``."""

    prefix = "exbe"
    env_prefix = "EXBE"  # type: ignore[assignment]  # Invoke types its class default (None), not the attribute

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        return merge_dicts(Config.global_defaults(), collection_config())

    def load_shell_env(self) -> None:
        """Invoke's loading, with its failures turned into one-line configuration errors."""
        try:
            super().load_shell_env()
        except (AmbiguousEnvVar, UncastableEnvVar, ValueError) as exc:
            raise ConfigError(
                f"an EXBE_* environment variable cannot be used ({exc}); variables override existing keys only, "
                "numbers must be digits, and lists such as exbe.inventory can only come from exbe.yaml"
            ) from None


# --- reading the subtree ------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Invoke's DataProxy objects (and any mapping) as plain dicts, recursively."""
    if hasattr(value, "keys") and callable(value.keys):
        return {key: _plain(value[key]) for key in value.keys()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _type_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", str: "a string", list: "a list", dict: "a mapping"}[kind]


def _is_a(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _subtree(exbe_cfg: Any) -> dict[str, Any]:
    tree = _plain(exbe_cfg) if exbe_cfg is not None else {}
    if not isinstance(tree, dict):
        raise ConfigError("exbe must be a mapping with 'inventory' and 'defaults'")
    unknown = sorted(set(tree) - {"inventory", "defaults"})
    if unknown:
        raise ConfigError(f"unknown setting exbe.{unknown[0]}; exbe holds only 'inventory' and 'defaults'")
    return tree


def _typed(given: Mapping[str, Any], spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``given`` over ``spec``, refusing unknown keys and values of another type than the default's."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(f"unknown setting {path}.{unknown[0]}; known: {', '.join(spec)}")
    result: dict[str, Any] = {}
    for key, default in spec.items():
        value = given.get(key, default)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}.{key} must be a mapping, got {value!r}")
            result[key] = _typed(value, default, f"{path}.{key}")
        elif not _is_a(value, type(default)):
            raise ConfigError(f"{path}.{key} must be {_type_name(type(default))}, got {value!r}")
        else:
            result[key] = value
    return result


def _check_port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{what} must be a port number between 1 and 65535, got {value}")


def defaults_dict(exbe_cfg: Any) -> dict[str, Any]:
    """The validated ``exbe.defaults`` as a plain dict (pass ``c.config.exbe``); missing keys take :data:`DEFAULTS`."""
    given = _subtree(exbe_cfg).get("defaults", {})
    if not isinstance(given, dict):
        raise ConfigError(f"exbe.defaults must be a mapping, got {given!r}")
    result = _typed(given, DEFAULTS, "exbe.defaults")
    for key in ("days", "warn_days", "fail_days", "min_age_days"):
        if result[key] < 0:
            raise ConfigError(f"exbe.defaults.{key} must not be negative, got {result[key]}")
    for key in ("concurrency", "connect_timeout", "operation_timeout", "read_timeout"):
        if result[key] < 1:
            raise ConfigError(f"exbe.defaults.{key} must be at least 1, got {result[key]}")
    if result["fail_days"] > result["warn_days"]:
        raise ConfigError(
            f"exbe.defaults.fail_days ({result['fail_days']}) must not exceed warn_days ({result['warn_days']})"
        )
    if result["read_timeout"] <= result["operation_timeout"]:
        raise ConfigError(
            f"exbe.defaults.read_timeout ({result['read_timeout']}) must exceed operation_timeout "
            f"({result['operation_timeout']}); pypsrp requires it"
        )
    if result["smtp"] not in SMTP_MODES:
        raise ConfigError(f"exbe.defaults.smtp must be one of {', '.join(SMTP_MODES)}, got {result['smtp']!r}")
    if result["auth"] not in AUTH_METHODS:
        raise ConfigError(f"exbe.defaults.auth must be one of {', '.join(AUTH_METHODS)}, got {result['auth']!r}")
    for key in ("port", "ssl_port", "exchange_port", "exchange_ssl_port", "backend_port"):
        _check_port(result[key], f"exbe.defaults.{key}")
    sandbox = result["sandbox"]
    if sandbox["hosts"] < 1:
        raise ConfigError(f"exbe.defaults.sandbox.hosts must be at least 1, got {sandbox['hosts']}")
    if sandbox["latency_ms"] < 0:
        raise ConfigError(f"exbe.defaults.sandbox.latency_ms must not be negative, got {sandbox['latency_ms']}")
    return result


# --- inventory ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
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

    @property
    def winrm_url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}/wsman"

    @property
    def exchange_url(self) -> str:
        scheme = "https" if self.exchange_ssl else "http"
        return f"{scheme}://{self.exchange_host}:{self.exchange_port}/{self.exchange_path}"

    @property
    def verify(self) -> bool | str:
        """pypsrp's ``cert_validation`` argument: the CA file when one is set, else the flag."""
        return self.ca_file if self.cert_validation and self.ca_file else self.cert_validation


def _entry(raw: Any, index: int, defaults: Mapping[str, Any]) -> Server:
    where = f"exbe.inventory[{index}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a server name or a mapping with at least 'name', got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
        raise ConfigError(f"{where} needs a 'name': a non-empty string without commas or surrounding spaces")
    where = f"server {name!r} ({where})"
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(ENTRY_KEYS)}")
    for key, kind in ENTRY_KEYS.items():
        if key in raw and not _is_a(raw[key], kind):
            raise ConfigError(f"{where}: {key} must be {_type_name(kind)}, got {raw[key]!r}")
    groups = raw.get("groups", [])
    if not all(isinstance(group, str) and group for group in groups):
        raise ConfigError(f"{where}: groups must be a list of names, got {groups!r}")
    auth = raw.get("auth", defaults["auth"])
    if auth not in AUTH_METHODS:
        raise ConfigError(f"{where}: auth must be one of {', '.join(AUTH_METHODS)}, got {auth!r}")
    ssl = raw.get("ssl", defaults["ssl"])
    port = raw.get("port", defaults["ssl_port"] if ssl else defaults["port"])
    exchange_ssl = raw.get("exchange_ssl", defaults["exchange_ssl"])
    exchange_default = defaults["exchange_ssl_port"] if exchange_ssl else defaults["exchange_port"]
    exchange_port = raw.get("exchange_port", exchange_default)
    _check_port(port, f"{where}: port")
    _check_port(exchange_port, f"{where}: exchange_port")
    backend_port = raw.get("backend_port", defaults["backend_port"])
    _check_port(backend_port, f"{where}: backend_port")
    if auth == "basic" and not ssl:
        raise ConfigError(f"{where}: Basic authentication over HTTP is refused, as WinRM does; set ssl: true")
    if auth == "basic" and not exchange_ssl:
        raise ConfigError(f"{where}: Basic authentication over HTTP is refused, as WinRM does; set exchange_ssl: true")
    cert_validation = raw.get("cert_validation", defaults["cert_validation"])
    ca_file = raw.get("ca_file") or None
    if ca_file and not cert_validation:
        raise ConfigError(f"{where}: ca_file is set but cert_validation is false; remove one of them")
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"{where}: ca_file {ca_file!r} does not exist (relative to the working directory)")
    host = raw.get("host", name)
    return Server(
        name=name,
        host=host,
        port=port,
        ssl=ssl,
        auth=auth,
        cert_validation=cert_validation,
        ca_file=ca_file,
        groups=tuple(groups),
        exchange_host=str(raw.get("exchange_host") or host),
        exchange_port=exchange_port,
        exchange_ssl=exchange_ssl,
        exchange_path=raw.get("exchange_path", defaults["exchange_path"]).strip("/"),
        backend_port=backend_port,
        connect_timeout=defaults["connect_timeout"],
        operation_timeout=defaults["operation_timeout"],
        read_timeout=defaults["read_timeout"],
    )


def _check_unique_names(inventory: Iterable[Server]) -> None:
    seen: set[str] = set()
    for server in inventory:
        if server.name.lower() in seen:
            raise ConfigError(f"duplicate server name {server.name!r} in exbe.inventory (names are case-insensitive)")
        seen.add(server.name.lower())


def _matches(token: str, server: Server) -> bool:
    return token.lower() in (server.name.lower(), server.host.lower())


def load_inventory(exbe_cfg: Any) -> list[Server]:
    """The validated inventory of ``exbe_cfg`` (pass ``c.config.exbe``), in file order."""
    tree = _subtree(exbe_cfg)
    defaults = defaults_dict(tree)
    entries = tree.get("inventory", [])
    if not isinstance(entries, list):
        raise ConfigError("exbe.inventory must be a list of servers (it cannot come from an environment variable)")
    servers = [_entry(raw, index, defaults) for index, raw in enumerate(entries)]
    _check_unique_names(servers)
    return servers


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
        from exbe.shard import parse_shard
        from exbe.shard import shard as shard_of

        index, count = parse_shard(shard)
        mine = set(shard_of([server.name for server in selected], index, count))
        selected = [server for server in selected if server.name in mine]
    return selected


# --- credentials --------------------------------------------------------------------------------------------------

#: Authentication methods that cannot use the agent's own logon.
NEEDS_EXPLICIT_CREDENTIALS = ("basic", "credssp")


@dataclass(frozen=True)
class Credentials:
    """The account exbe connects as; ``username`` None means the agent's own logon.

    Without explicit credentials the transport uses Negotiate/Kerberos with the current logon (SSPI), which works
    only on a Windows agent that is a domain member (or, for Kerberos, where a ticket cache exists).
    """

    username: str | None = None
    password: Secret | None = None

    @property
    def uses_logon(self) -> bool:
        return self.username is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Credentials from ``EXBE_USERNAME``/``EXBE_PASSWORD`` only; the password is registered for redaction."""
        env = os.environ if environ is None else environ
        username = env.get("EXBE_USERNAME") or None
        password = env.get("EXBE_PASSWORD") or None
        if password is not None:
            REDACTOR.add(password, username=username)
        if username and not password:
            raise ConfigError("EXBE_USERNAME is set but EXBE_PASSWORD is not; set both, or neither to use this logon")
        if password and not username:
            raise ConfigError("EXBE_PASSWORD is set but EXBE_USERNAME is not; set both, or neither to use this logon")
        return cls(username, Secret(password) if password else None)

    def check(self, servers: Iterable[Server]) -> None:
        """Refuse servers whose authentication method cannot use the agent's logon when no credentials are set."""
        if not self.uses_logon:
            return
        for server in servers:
            if server.auth in NEEDS_EXPLICIT_CREDENTIALS:
                raise ConfigError(
                    f"server {server.name!r} uses {server.auth} authentication, which needs EXBE_USERNAME and "
                    "EXBE_PASSWORD in the environment"
                )
