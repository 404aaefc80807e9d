"""Where exbe's configuration comes from: Invoke's files, the environment, task flags, and the credentials.

Everything lives in one ``exbe:`` subtree of Invoke's configuration::

    exbe:
      inventory:                      # a list: only from files (exbe.inventory)
        - {name: exch01, host: exch01.contoso.local, groups: [dag1]}
      defaults: {days: 60, concurrency: 8, ...}   # the settings (exbe.settings)

Precedence, lowest first: the declared defaults (:mod:`exbe.settings`) < ``/etc/exbe.yaml`` < ``~/.exbe.yaml`` <
``./exbe.yaml`` (the ``exbe`` Program loads it itself, see :mod:`exbe.main`) < ``EXBE_<SETTING>`` variables <
``-f FILE`` (or ``EXBE_RUNTIME_CONFIG``) < task flags. Under plain ``invoke`` the files are Invoke's
(``invoke.yaml``...) and everything else is the same.

exbe reads its variables itself, when a task runs, under both entry points (:func:`load`): Invoke's own derivation
(prefix + key path, cast by the default's type, booleans true for anything but ``0``/empty, lists impossible) is
not used for exbe's settings, so ``EXBE_DAYS`` works for ``exbe`` and ``invoke`` alike and ``EXBE_TRUST=false``
turns trust off. Credentials come only from ``EXBE_USERNAME``/``EXBE_PASSWORD`` (:meth:`Credentials.from_env`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from invoke.config import Config, merge_dicts

from . import config_files
from .errors import ConfigError
from .inventory import Server, load_inventory, select_servers
from .redaction import REDACTOR, Secret
from .settings import Defaults, read_environment, read_file, read_flags, refuse_controls, resolve, shown, subtree

__all__ = ["Credentials", "ExbeConfig", "Loaded", "Server", "collection_config", "load", "load_inventory",
           "select_servers"]


def collection_config() -> dict[str, Any]:
    """What ``tasks.py`` passes to ``ns.configure(...)``: the shape of the subtree. The defaults are not copied into
    Invoke's configuration: they live in :mod:`exbe.settings` and :func:`load` applies them."""
    return {"exbe": {"inventory": [], "defaults": {}}}


class ExbeConfig(Config):
    """Invoke's Config for the ``exbe`` command: files ``exbe.yaml``/``exbe.json``, no Invoke-derived variables."""

    prefix = "exbe"
    env_prefix = "EXBE"  # type: ignore[assignment]  # Invoke types its class default (None), not the attribute

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        return merge_dicts(Config.global_defaults(), collection_config())

    def load_runtime(self, merge: bool = True) -> None:
        """The ``-f`` file: one whose name Invoke has no loader for is one line, not Invoke's traceback."""
        path = getattr(self, "_runtime_path", None)
        if path is not None and os.path.splitext(str(path))[1].lstrip(".") not in self._file_suffixes:
            raise ConfigError(f"config file {shown(str(path))} must be a YAML or JSON file: its name must end in "
                              f"{', '.join('.' + suffix for suffix in self._file_suffixes)}")
        super().load_runtime(merge)

    def _load_yaml(self, path: os.PathLike[Any]) -> Any:
        return config_files.read_yaml(os.fspath(path))

    _load_yml = _load_yaml

    def _load_json(self, path: os.PathLike[Any]) -> Any:
        return config_files.read_json(os.fspath(path))

    def load_shell_env(self) -> None:
        """Nothing: Invoke would map ``EXBE_EXBE_DEFAULTS_...`` onto the subtree with its casting rules; exbe reads
        its flat ``EXBE_<SETTING>`` names itself when a task runs (:func:`load`), the same under plain ``invoke``."""


# --- loading ------------------------------------------------------------------------------------------------------

#: Said on every run whose template override directory comes from ``EXBE_TEMPLATE_DIR``: the templates there are
#: the scripts exbe runs on every server, and a pipeline variable is easier to change unseen than a reviewed file.
TEMPLATE_DIR_FROM_ENVIRONMENT = ("the template override directory comes from the environment (EXBE_TEMPLATE_DIR="
                                 "{path}): its templates become the scripts exbe runs on every server; set "
                                 "exbe.defaults.template_dir in the configuration file instead")


@dataclasses.dataclass(frozen=True)
class Loaded:
    """The configuration of one task: the settings, the inventory as configured, warnings to show."""

    defaults: Defaults
    inventory: list[Any]  # the raw entries; exbe.inventory.servers() validates them against ``defaults``
    warnings: tuple[str, ...] = ()


def load(config: Any, environ: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None) -> Loaded:
    """Settings and inventory from a task's ``c.config`` (or a plain ``{"exbe": {...}}`` mapping), the
    environment (``os.environ`` when None) and the task ``flags`` that override settings (``{"--days": "45"}``).

    Every value is validated here, before anything is contacted; a bad one is a :class:`ConfigError` (exit code 2)
    naming where it came from: ``exbe.defaults.days``, ``EXBE_DAYS`` or ``--days``.
    """
    tree = subtree(config.get("exbe") if hasattr(config, "get") else None)
    files = read_file(tree.get("defaults"))
    # Invoke keeps the -f file's data apart (``_runtime``); it ranks above the environment, as in Invoke.
    runtime = getattr(config, "_runtime", None) or {}
    runtime_paths = set(read_file(subtree(runtime.get("exbe")).get("defaults"))) if runtime else set()
    env, warnings = read_environment(os.environ if environ is None else environ)
    env = {path: value for path, value in env.items() if path not in runtime_paths}
    defaults = resolve(files, env, read_flags(flags or {}))
    if defaults.template_dir and "template_dir" in env:
        warnings.append(TEMPLATE_DIR_FROM_ENVIRONMENT.format(path=defaults.template_dir))
    inventory = tree.get("inventory") or []
    if not isinstance(inventory, list):
        raise ConfigError("exbe.inventory must be a list of servers (it cannot come from an environment variable)")
    return Loaded(defaults, inventory, tuple(warnings))


# --- credentials --------------------------------------------------------------------------------------------------

USERNAME_VAR = "EXBE_USERNAME"
PASSWORD_VAR = "EXBE_PASSWORD"

#: Authentication methods that cannot use the agent's own logon.
NEEDS_EXPLICIT_CREDENTIALS = ("basic", "credssp")


#: An Azure Pipelines macro the agent left as text: ``$(EXBE_PASSWORD)`` when the pipeline defines no such variable.
UNEXPANDED_MACRO = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\)")


def refuse_unexpanded_macro(name: str, value: str | None) -> None:
    """A credential that is literally ``$(NAME)`` is a missing pipeline variable, not a password: Azure Pipelines
    maps an undefined variable into ``env:`` as its macro text. Said before any server is contacted (a wrong
    password, tried on the fleet, counts towards the account's lockout)."""
    found = UNEXPANDED_MACRO.fullmatch((value or "").strip())
    if found:
        raise ConfigError(f"{name} is the text $({found.group(1)}): the pipeline variable {found.group(1)} is not "
                          "defined for this run (a secret variable not set, or its variable group not linked to "
                          f"the pipeline); define it, or map neither {USERNAME_VAR} nor {PASSWORD_VAR} to use this "
                          "agent's own logon")


@dataclasses.dataclass(frozen=True)
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
        username = env.get(USERNAME_VAR) or None
        password = env.get(PASSWORD_VAR) or None
        for name, value in ((USERNAME_VAR, username), (PASSWORD_VAR, password)):
            refuse_unexpanded_macro(name, value)
        if username is not None:
            refuse_controls(username, USERNAME_VAR)
        if password is not None:
            REDACTOR.add(password, username=username)
        if username and not password:
            raise ConfigError("EXBE_USERNAME is set but EXBE_PASSWORD is not; set both, or neither to use this logon")
        if password and not username:
            raise ConfigError("EXBE_PASSWORD is set but EXBE_USERNAME is not; set both, or neither to use this logon")
        return cls(username, Secret(password) if password else None)

    def check(self, servers: Iterable[Server]) -> None:
        """Refuse servers whose authentication method cannot use the agent's logon when no credentials are set, and
        Basic authentication with credentials it cannot send (:meth:`check_basic`)."""
        if not self.uses_logon:
            self.check_basic(servers)
            return
        for server in servers:
            if server.auth in NEEDS_EXPLICIT_CREDENTIALS:
                raise ConfigError(
                    f"server {server.name!r} uses {server.auth} authentication, which needs EXBE_USERNAME and "
                    "EXBE_PASSWORD in the environment"
                )

    def check_basic(self, servers: Iterable[Server]) -> None:
        """HTTP Basic sends ``user:password`` encoded as Latin-1 (requests, which pypsrp uses); a character outside it
        would fail while the header is built -- an error that quoted the character and its position in the
        password. So such credentials are refused before anything is sent, naming no character and no position."""
        basic = [server.name for server in servers if server.auth == "basic"]
        if not basic or self.username is None or self.password is None:
            return
        for name, value in ((USERNAME_VAR, self.username), (PASSWORD_VAR, self.password.reveal())):
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigError(f"{name} holds a character that HTTP Basic authentication cannot send (it carries "
                                  f"Latin-1 only), and server {basic[0]!r} uses auth: basic; use negotiate, ntlm or "
                                  "kerberos for it, or an account whose name and password are Latin-1") from None
