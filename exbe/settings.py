# Over 500 lines because it is the one table of every setting, each declared once with its help and checks, and
# the machinery that reads it; the documentation generator is at its end.
"""exbe's settings, each declared once: its type, default, validation, environment variable, help text and the task
flag that overrides it. Configuration loading (:mod:`exbe.config`), the help of those flags (:mod:`exbe.tasks`) and
the tables of ``docs/configuration.md`` all come from the declarations below.

A setting is one field of :class:`Defaults` (or of a section of it, such as :class:`SandboxDefaults`)::

    days: int = setting(60, "renew when fewer days are left", at_least=0, flag="--days")

which reads: the key ``exbe.defaults.days`` in a file, the variable ``EXBE_DAYS`` (``EXBE_`` and the key path under
``exbe.defaults`` joined by ``_``, upper-cased: ``sandbox.hosts`` is ``EXBE_SANDBOX_HOSTS``), an integer that must
not be negative, 60 when nothing sets it, and ``--days`` on the tasks that take it. The annotation is the type:
``int``, ``bool``, ``str``, or a ``Literal`` of the allowed strings. A boolean's flag sets the opposite of the
default (``--no-trust`` turns ``trust`` off, ``--restart-iis`` turns ``restart_iis`` on).

The same mechanism (:func:`setting`, :func:`fields_of`, :meth:`Field.typed`/:meth:`Field.checked`) declares and
checks the keys of an inventory entry (:class:`Entry`).

``python -m exbe.settings --write docs/configuration.md`` regenerates the documentation's tables; a test fails when
the committed document differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any, Literal, TypeVar

from .errors import ConfigError
from .redaction import visible_controls

T = TypeVar("T")

SmtpMode = Literal["keep", "move"]
AuthMethod = Literal["negotiate", "ntlm", "kerberos", "basic", "credssp"]
AUTH_METHODS: tuple[str, ...] = typing.get_args(AuthMethod)

_SPEC = "exbe.setting"
_SECTION = "exbe.section"


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field says about itself besides its type and default."""

    help: str
    at_least: int | None = None
    port: bool = False  # a TCP port: 1..65535
    nonempty: bool = False
    flag: str | None = None  # the task flag that overrides the setting
    #: A name (of a server, a group, a certificate): printable characters only (no tab, no invisible format
    #: character), at most ``max_length`` of them.
    max_length: int | None = None
    url_path: bool = False  # the path of a URL, slashes around it ignored


def setting(default: T, help: str, *, at_least: int | None = None, port: bool = False, nonempty: bool = False,
            flag: str | None = None, max_length: int | None = None, url_path: bool = False) -> T:
    """A dataclass field that is a setting (or an inventory key): its default and what :class:`Spec` holds."""
    return dataclasses.field(default=default,
                             metadata={_SPEC: Spec(help, at_least, port, nonempty, flag, max_length, url_path)})


#: A URL path: segments of unreserved characters (RFC 3986) between slashes; no query, fragment, escape or dot
#: segment, so the value cannot point the request anywhere but at the path it names.
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_URL_PATH = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


S = TypeVar("S")


def section(cls: type[S], help: str) -> S:
    """A dataclass field holding a group of settings (``exbe.defaults.sandbox``)."""
    return dataclasses.field(default_factory=cls, metadata={_SECTION: help})


# --- the settings -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SandboxDefaults:
    """The embedded sandbox: simulated servers exbe runs against when no inventory is configured."""

    hosts: int = setting(6, "simulated servers sim-exch01..sim-exchNN", at_least=1)
    scenarios: str = setting("mixed", "'mixed' or a comma list of scenarios cycled over the hosts")
    state_dir: str = setting("", "where the simulated servers of --sandbox keep their state (empty: a new temporary "
                                 "directory each run, never the foreground `exbe sandbox`'s)")
    faults: str = setting("", "faults to inject, e.g. 'sim-exch02:bind_com_error;*:latency_ms=50'")
    latency_ms: int = setting(0, "added latency per request on every host, in milliseconds", at_least=0)
    fresh: bool = setting(True, "start from the scenarios' state instead of the state left by the last run")


@dataclasses.dataclass(frozen=True)
class AuthCertificateDefaults:
    """The organization's Auth certificate (`exbe auth`): MonitorExchangeAuthCertificate.ps1's thresholds
    (CSS-Exchange, DataCollection/Get-ExchangeAuthCertificateStatus.ps1 and ConfigurationAction/
    New-ExchangeAuthCertificate.ps1), the defaults."""

    renew_days: int = setting(60, "stage a next Auth certificate when the current one has this many days left or "
                                  "fewer", at_least=1)
    next_min_days: int = setting(120, "a staged next Auth certificate with this many days left or fewer is staged "
                                      "again", at_least=0)
    lead_days: int = setting(30, "days between staging the next Auth certificate and its effective date (shorter "
                                 "when the current one expires sooner: 4, 2 or 0 days, as MEAC does)", at_least=0)
    skew_minutes: int = setting(15, "minutes added to the server's clock for an effective date of 'now', so clock "
                                    "skew never makes Set-AuthConfig refuse a date in the past", at_least=1)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Every setting, as ``exbe.defaults`` in a configuration file holds them."""

    days: int = setting(60, "renew when fewer days are left", at_least=0, flag="--days")
    warn_days: int = setting(60, "verify warns when the back-end certificate has fewer days left", at_least=0)
    fail_days: int = setting(30, "verify fails when the back-end certificate has fewer days left", at_least=0)
    min_age_days: int = setting(7, "days a switch must be old before cleanup removes the certificate it replaced",
                                at_least=0, flag="--min-age")
    smtp: SmtpMode = setting("keep", "keep SMTP on the old certificate, or move it to the new one", flag="--smtp")
    trust: bool = setting(True, "copy the new certificate to LocalMachine\\Root", flag="--no-trust")
    restart_iis: bool = setting(False, "after the bind, iisreset one server at a time when this run changed a binding "
                                       "or W3SVC/WAS are not running", flag="--restart-iis")
    backend_site: str = setting("Exchange Back End", "IIS site whose *:444 binding carries the back-end certificate",
                                nonempty=True)
    frontend_site: str = setting("Default Web Site", "IIS site whose 127.0.0.1:443 binding follows the back end",
                                 nonempty=True)
    friendly_name: str = setting("Microsoft Exchange", "friendly name of the certificates exbe creates "
                                 "(New-ExchangeCertificate takes fewer than 64 characters)", nonempty=True,
                                 max_length=63)
    concurrency: int = setting(8, "servers worked on at once", at_least=1)
    connect_timeout: int = setting(30, "seconds to wait for a connection", at_least=1)
    operation_timeout: int = setting(60, "seconds one WinRM operation may take on the server", at_least=1)
    read_timeout: int = setting(90, "seconds to wait for an answer", at_least=1)
    server_timeout: int = setting(600, "seconds one server's whole run may take (every request is bounded by what "
                                       "is left; then 30 s more to release exbe's lock): a server that stops "
                                       "answering costs this, not read_timeout again and again; the wait for "
                                       "another server's IIS restart does not count", at_least=1)
    auth: AuthMethod = setting("negotiate", "authentication, for servers whose inventory entry names none")
    port: int = setting(5985, "WinRM port over HTTP", port=True)
    ssl_port: int = setting(5986, "WinRM port over HTTPS (servers with ssl: true and no port)", port=True)
    ssl: bool = setting(False, "WinRM over HTTPS, for servers whose entry does not say")
    exchange_port: int = setting(80, "Exchange PowerShell port over HTTP", port=True)
    exchange_ssl_port: int = setting(443, "Exchange PowerShell port over HTTPS (servers with exchange_ssl: true and "
                                          "no exchange_port)", port=True)
    exchange_ssl: bool = setting(False, "Exchange PowerShell over HTTPS, for servers whose entry does not say")
    exchange_path: str = setting("PowerShell", "path of the Exchange PowerShell endpoint", url_path=True)
    backend_port: int = setting(444, "Exchange Back End's HTTPS port, probed from this agent by verify", port=True)
    template_dir: str = setting("", "a directory whose templates override the shipped ones (empty: none); set it in "
                                    "a configuration file: from EXBE_TEMPLATE_DIR it is warned about on every run")
    sandbox: SandboxDefaults = section(SandboxDefaults, "the embedded sandbox")
    auth_certificate: AuthCertificateDefaults = section(AuthCertificateDefaults, "the Auth certificate (`exbe auth`)")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A relation between two settings: ``subject`` must not exceed (``<=``) or must exceed (``>``) ``other``."""

    subject: str
    relation: Literal["<=", ">"]
    other: str
    why: str = ""

    def holds(self, subject: int, other: int) -> bool:
        return subject <= other if self.relation == "<=" else subject > other

    @property
    def words(self) -> str:
        return "must not exceed" if self.relation == "<=" else "must exceed"


RULES = (
    Rule("fail_days", "<=", "warn_days"),
    Rule("read_timeout", ">", "operation_timeout", "pypsrp requires it"),
)

#: Settings that were removed, and what to do instead (a file still naming one is refused with this line).
REMOVED = {
    "reports_dir": "it never did anything; pass --junit PATH and --json PATH to write reports",
}

#: Keys that exist on an inventory entry only, never in ``exbe.defaults`` or the environment, and why: switching
#: them for the whole fleet at once is what must not happen silently.
PER_SERVER_ONLY = {
    "cert_validation": "TLS certificate validation cannot be switched off for the whole fleet; set "
                       "cert_validation: false on the inventory entry of each server that needs it (a lab), or "
                       "better, ca_file",
}

#: Variables exbe reads that are not settings.
OTHER_VARIABLES = {
    "EXBE_USERNAME": "the account exbe connects as (`CONTOSO\\admin` or `admin@contoso.local`); with "
                     "EXBE_PASSWORD, and only from the environment",
    "EXBE_PASSWORD": "its password; masked in every output",
    "EXBE_RUNTIME_CONFIG": "the `exbe` command's `-f` file when `-f` is not given",
    "EXBE_CI_MASK": "`true`: also ask the CI platform to mask the password (it prints a mask command with the "
                    "password on stdout; not needed for secrets mapped from the platform's secret store)",
    "EXBE_SANDBOX_KEY_CACHE": "where the sandbox caches generated keys, owner-only (0700; one owned by another "
                              "user or a symbolic link is refused and keys are generated each run); default: "
                              "`exbe/sandbox-keys` in the user's cache directory (`$XDG_CACHE_HOME`, else "
                              "`~/.cache`; on Windows `%LOCALAPPDATA%`)",
}

#: The spellings a boolean variable accepts, in any case.
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


# --- fields -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
    """One declared field, with what its annotation says: ``kind`` (int, bool, str, or tuple for a list of names),
    ``choices`` (from a Literal) and whether None is allowed (an inventory key that inherits a setting)."""

    name: str
    kind: type
    choices: tuple[str, ...]
    optional: bool
    default: Any
    spec: Spec

    @property
    def requirement(self) -> str:
        """What a value must be, as the documentation says it."""
        if self.choices:
            quoted = [f"`{choice}`" for choice in self.choices]
            return " or ".join(quoted) if len(quoted) < 3 else f"one of {', '.join(quoted)}"
        if self.kind is bool:
            return "true or false"
        if self.kind is tuple:
            return "list of names"
        if self.kind is int:
            if self.spec.port:
                return "port number (1-65535)"
            return "integer" if self.spec.at_least is None else f"integer, at least {self.spec.at_least}"
        if self.spec.url_path:
            return "URL path (letters, digits, `. _ ~ -` between slashes)"
        if self.spec.max_length is not None:
            return f"printable string of at most {self.spec.max_length} characters"
        return "non-empty string" if self.spec.nonempty else "string"

    def typed(self, value: Any, label: str, hint: str = "") -> Any:
        """A value read from a file (already typed by YAML/JSON), or refused: ``label`` names where it came from."""
        if value is None and self.optional:
            return None
        if self.kind is bool and not isinstance(value, bool):
            raise _must(label, "be true or false", value, hint)
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _must(label, "be an integer", value, hint)
        if self.kind is str and not isinstance(value, str):
            raise _must(label, "be a string", value, hint)
        if self.kind is tuple:
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
                raise _must(label, "be a list of names", value, hint)
            return tuple(value)
        return value

    def parsed(self, text: str, label: str, hint: str = "") -> Any:
        """A value given as text (an environment variable, a task flag), or refused."""
        if self.kind is bool:
            word = text.strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise _must(label, "be true or false (or 1/0, yes/no, on/off)", text, hint)
            return word in TRUE_WORDS
        if self.kind is int:
            if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
                raise _must(label, "be an integer", text, hint)
            return int(text)
        return text

    def checked(self, value: Any, label: str, hint: str = "") -> Any:
        """``value`` (of the right type) if it satisfies the field's validation, or refused."""
        spec = self.spec
        if value is None:
            return value
        if self.choices and value not in self.choices:
            raise _must(label, f"be one of {', '.join(self.choices)}", value, hint)
        if spec.port and not 1 <= value <= 65535:
            raise _must(label, "be a port number between 1 and 65535", value, hint)
        if spec.at_least is not None and value < spec.at_least:
            raise _must(label, "not be negative" if spec.at_least == 0 else f"be at least {spec.at_least}", value,
                        hint)
        if spec.nonempty and not value.strip():
            raise _must(label, "not be empty", value, hint)
        if spec.url_path and not _URL_PATH.fullmatch(value.strip("/")):
            raise _must(label, "be a URL path of letters, digits and . _ ~ - between slashes (no query, escape or dot "
                               "segment), such as PowerShell", value, hint)
        texts: tuple[Any, ...] = value if isinstance(value, tuple) else (value,)  # a list of names, or one value
        for text in texts:
            if isinstance(text, str):
                self._check_text(text, label, hint)
        return value

    def _check_text(self, text: str, label: str, hint: str) -> None:
        refuse_controls(text, label, hint)
        limit = self.spec.max_length
        if limit is not None and (len(text) > limit or not text.isprintable()):
            raise _must(label, f"be printable and at most {limit} characters long", text, hint)


#: The longest string exbe takes from a file, a variable or a flag (a setting with ``max_length`` allows less): a
#: name, a path, a URL path or an account fits; a 100 KB value is a mistake or an attack, never a setting.
TEXT_LIMIT = 1024


def refuse_controls(text: str, label: str, hint: str = "") -> None:
    """Control characters (NUL, ESC, newlines, DEL, C1, bidi controls...) are refused in every string exbe is given,
    whatever its source (file, environment, flag): they would end up in PowerShell parameters, URLs, log lines and
    reports. The set is the one :func:`exbe.redaction.visible_controls` shows escaped in every output. So is a
    string longer than :data:`TEXT_LIMIT`."""
    if visible_controls(text, keep="") != text:
        raise _must(label, "not contain control characters", text, hint)
    if len(text) > TEXT_LIMIT:
        raise _must(label, f"be at most {TEXT_LIMIT} characters long", text, hint)


def named(key: object) -> str:
    """A name exbe did not expect (a key of a file, a variable's name) as a message shows it: as it is when it is
    short and printable, else its ``repr`` with control characters escaped, cut short (:func:`shown`)."""
    if isinstance(key, str) and visible_controls(key, keep="") == key and len(key) <= SHOWN_CHARACTERS:
        return key
    return shown(key)


#: How much of a refused value an error line shows.
SHOWN_CHARACTERS = 80


def shown(value: Any) -> str:
    """A refused value as an error line shows it: its ``repr`` (control characters escaped), cut short."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


def _must(label: str, requirement: str, value: Any, hint: str) -> ConfigError:
    return ConfigError(f"{label} must {requirement}, got {shown(value)}{hint}")


@cache
def fields_of(cls: type) -> tuple[Field | tuple[str, type], ...]:
    """The declared fields of ``cls``; a section comes as ``(name, its class)``."""
    hints = typing.get_type_hints(cls)
    result: list[Field | tuple[str, type]] = []
    for declared in dataclasses.fields(cls):
        hint: Any = hints[declared.name]
        if _SECTION in declared.metadata:
            result.append((declared.name, hint))
            continue
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            (hint,) = [arg for arg in args if arg is not type(None)]
        choices: tuple[str, ...] = ()
        if typing.get_origin(hint) is Literal:
            choices, hint = typing.get_args(hint), str
        elif typing.get_origin(hint) is tuple:
            hint = tuple
        result.append(Field(declared.name, hint, choices, optional, declared.default, declared.metadata[_SPEC]))
    return tuple(result)


# --- the settings as a flat table ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting with its path under ``exbe.defaults`` (``days``, ``sandbox.hosts``)."""

    path: str
    field: Field

    @property
    def key(self) -> str:
        return f"exbe.defaults.{self.path}"

    @property
    def env(self) -> str:
        return "EXBE_" + self.path.replace(".", "_").upper()

    @property
    def default(self) -> Any:
        return self.field.default

    @property
    def flag_value(self) -> bool:
        """What a boolean setting's flag sets: the opposite of the default."""
        return not self.default

    def hint(self, label: str) -> str:
        """How to write a good value, for an error about ``label`` (a variable or a flag)."""
        example = _text(self.default) if self.field.kind is not bool else _text(not self.default)
        if label == self.env:
            return f" (for example {self.env}={example}; {self.field.spec.help})"
        if label == self.field.spec.flag:
            return f" (for example {label} {example}; {self.field.spec.help})"
        return ""


def _walk(cls: type, prefix: str = "") -> Iterator[Setting]:
    for item in fields_of(cls):
        if isinstance(item, Field):
            yield Setting(prefix + item.name, item)
        else:
            yield from _walk(item[1], f"{prefix}{item[0]}.")


SETTINGS: tuple[Setting, ...] = tuple(_walk(Defaults))
BY_PATH = {s.path: s for s in SETTINGS}
BY_ENV = {s.env: s for s in SETTINGS}
BY_FLAG = {s.field.spec.flag: s for s in SETTINGS if s.field.spec.flag}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- reading each source: {path: (value, label)} -----------------------------------------------------------------

Layer = dict[str, tuple[Any, str]]


def plain(value: Any) -> Any:
    """Invoke's DataProxy objects (and any mapping) as plain dicts and lists, recursively."""
    if hasattr(value, "keys") and callable(value.keys):
        return {key: plain(value[key]) for key in value.keys()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def subtree(exbe_cfg: Any) -> dict[str, Any]:
    """The ``exbe:`` subtree as a plain dict, holding only ``inventory`` and ``defaults``."""
    tree = plain(exbe_cfg) if exbe_cfg is not None else {}
    if not isinstance(tree, dict):
        raise ConfigError("exbe must be a mapping with 'inventory' and 'defaults'")
    unknown = sorted(set(tree) - {"inventory", "defaults"}, key=str)
    if unknown:
        raise ConfigError(f"unknown setting exbe.{named(unknown[0])}; exbe holds only 'inventory' and 'defaults'")
    return tree


def read_file(given: Any, where: str = "exbe.defaults", cls: type = Defaults, prefix: str = "") -> Layer:
    """The settings a configuration file gives under ``exbe.defaults``, type-checked."""
    given = plain(given) if given is not None else {}
    if not isinstance(given, dict):
        raise ConfigError(f"{where} must be a mapping, got {shown(given)}")
    items = {item.name if isinstance(item, Field) else item[0]: item for item in fields_of(cls)}
    layer: Layer = {}
    for key, value in given.items():
        item = items.get(key)
        if item is None:
            path = f"{prefix}{key}"
            if path in PER_SERVER_ONLY:
                raise ConfigError(f"{where}.{key} is refused: {PER_SERVER_ONLY[path]}")
            if path in REMOVED:
                raise ConfigError(f"{where}.{key} was removed: {REMOVED[path]}; delete it from the file")
            raise ConfigError(f"unknown setting {where}.{named(key)}; known: {', '.join(items)}")
        if isinstance(item, Field):
            layer[prefix + key] = (item.typed(value, f"{where}.{key}"), f"{where}.{key}")
        else:
            layer.update(read_file(value, f"{where}.{key}", item[1], f"{prefix}{key}."))
    return layer


def read_environment(environ: Mapping[str, str]) -> tuple[Layer, list[str]]:
    """The settings given as ``EXBE_<SETTING>`` variables, and warnings about ``EXBE_*`` names exbe does not know.

    An empty variable counts as unset. The names of the former scheme (``EXBE_EXBE_DEFAULTS_DAYS``,
    ``INVOKE_EXBE_DEFAULTS_DAYS``) are refused with the name to use instead: ignoring them would silently change
    what a pipeline that sets them does.
    """
    layer: Layer = {}
    warnings: list[str] = []
    for name in sorted(environ):
        text = environ[name]
        if not name.startswith(("EXBE_", "INVOKE_EXBE_")) or name in OTHER_VARIABLES or text == "":
            continue
        known = BY_ENV.get(name)
        per_server = name.removeprefix("EXBE_").lower()
        if known is None and per_server in PER_SERVER_ONLY:
            raise ConfigError(f"{name} is refused: {PER_SERVER_ONLY[per_server]}")
        if known is not None:
            layer[known.path] = (known.field.parsed(text, name, known.hint(name)), name)
        elif name.startswith(("EXBE_EXBE_", "INVOKE_EXBE_")):
            raise ConfigError(_former_name(name))
        else:
            close = difflib.get_close_matches(name, [*BY_ENV, *OTHER_VARIABLES], n=1)
            guess = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{named(name)} is not a variable exbe reads, ignored{guess} (docs/configuration.md lists "
                            "them)")
    return layer, warnings


def _former_name(name: str) -> str:
    path = name.split("_EXBE_", 1)[1] if name.startswith("INVOKE_") else name[len("EXBE_EXBE_"):]
    if path == "INVENTORY" or path.startswith("INVENTORY_"):
        return (f"{named(name)}: the inventory cannot come from the environment; list the servers under "
                "exbe.inventory in exbe.yaml")
    current = BY_ENV.get("EXBE_" + path.removeprefix("DEFAULTS_"))
    instead = f"set {current.env} instead" if current else "settings are EXBE_<SETTING>, such as EXBE_DAYS"
    return f"{named(name)} is no longer read: {instead} (docs/configuration.md)"


def read_flags(flags: Mapping[str, Any]) -> Layer:
    """The settings task flags override: ``{"--days": "45", "--no-trust": True}`` (flags not given are left out)."""
    layer: Layer = {}
    for flag, value in flags.items():
        known = BY_FLAG[flag]
        if known.field.kind is bool:
            if value:
                layer[known.path] = (known.flag_value, flag)
            continue
        hint = known.hint(flag)
        field = known.field
        typed = field.parsed(value, flag, hint) if isinstance(value, str) else field.typed(value, flag, hint)
        layer[known.path] = (typed, flag)
    return layer


def resolve(*layers: Layer) -> Defaults:
    """The settings from ``layers`` (lowest first) over the declared defaults, each checked once."""
    merged: Layer = {}
    for layer in layers:
        merged.update(layer)
    values: dict[str, Any] = {}
    for known in SETTINGS:
        value, label = merged.get(known.path, (known.default, known.key))
        values[known.path] = known.field.checked(value, label, known.hint(label))
    for rule in RULES:
        subject, other = values[rule.subject], values[rule.other]
        if not rule.holds(subject, other):
            label = merged.get(rule.subject, (None, BY_PATH[rule.subject].key))[1]
            source = merged.get(rule.other, (None, ""))[1]
            origin = f", from {source}" if source and not source.startswith("exbe.defaults.") else ""
            why = f"; {rule.why}" if rule.why else ""
            raise ConfigError(f"{label} ({subject}) {rule.words} {rule.other} ({other}{origin}){why}")
    defaults: Defaults = _build(Defaults, values)
    return defaults


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    kwargs: dict[str, Any] = {}
    for item in fields_of(cls):
        if isinstance(item, Field):
            kwargs[item.name] = values[prefix + item.name]
        else:
            kwargs[item[0]] = _build(item[1], values, f"{prefix}{item[0]}.")
    return cls(**kwargs)


# --- help and documentation ---------------------------------------------------------------------------------------


def flag_help(flag: str) -> str:
    """The help of a task flag that overrides a setting."""
    known = BY_FLAG[flag]
    where = f"{known.key}, {known.env}"
    if known.field.kind is bool:
        turn, default = ("on", "off") if known.flag_value else ("off", "on")
        return f"turn {known.path} {turn} (default {default}; {where}): {known.field.spec.help}"
    return f"{known.field.spec.help}: {known.field.requirement.replace('`', '')} (default {_text(known.default)}; " \
           f"{where})"


def _cell(value: Any) -> str:
    text = _text(value)
    return f"`{text}`" if text else "(empty)"


#: The longest server or group name: a DNS label's (RFC 1035), which a server name is one of.
NAME_LENGTH = 63


@dataclasses.dataclass(frozen=True)
class Entry:
    """One inventory entry as a file writes it; None takes the value from ``exbe.defaults``. Declared here, as
    the settings are, and read by :mod:`exbe.inventory`."""

    name: str = setting("", "what `--server` and the reports call the server (required; no commas)",
                        max_length=NAME_LENGTH)
    host: str | None = setting(None, "WinRM host: a DNS name or an IP address, IPv6 in brackets (`[fd00::5]`), "
                                     "nothing else (the port is `port`); default: `name`")
    port: int | None = setting(None, "WinRM port; default: `exbe.defaults.port`, or `ssl_port` with `ssl: true`",
                               port=True)
    ssl: bool | None = setting(None, "WinRM over HTTPS; default: `exbe.defaults.ssl`")
    auth: AuthMethod | None = setting(None, "authentication; default: `exbe.defaults.auth` (`basic` needs `ssl` "
                                            "and `exchange_ssl`)")
    cert_validation: bool = setting(True, "validate the TLS certificates of this server's endpoints; `false` (a "
                                          "lab only, never with `basic`) is set per server and warned about on "
                                          "every run")
    ca_file: str | None = setting(None, "CA file that issued the listeners' certificates (relative to the working "
                                        "directory); needs `cert_validation`")
    groups: tuple[str, ...] = setting((), "groups the server belongs to, for `--group`", max_length=NAME_LENGTH)
    exchange_host: str | None = setting(None, "Exchange PowerShell host, written as `host` is; default: `host`")
    exchange_port: int | None = setting(None, "Exchange PowerShell port; default: `exbe.defaults.exchange_port`, or "
                                              "`exchange_ssl_port` with `exchange_ssl: true`", port=True)
    exchange_ssl: bool | None = setting(None, "Exchange PowerShell over HTTPS; default: `exbe.defaults.exchange_ssl`")
    exchange_path: str | None = setting(None, "path of the Exchange PowerShell endpoint; default: "
                                              "`exbe.defaults.exchange_path`", url_path=True)
    backend_port: int | None = setting(None, "Exchange Back End's HTTPS port; default: `exbe.defaults.backend_port`",
                                       port=True)


def markdown() -> str:
    """The generated part of docs/configuration.md."""
    lines = [
        "| setting (under `exbe.defaults`) | environment variable | task flag | value | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for known in SETTINGS:
        flag = known.field.spec.flag or ""
        if flag and known.field.kind is bool:
            flag = f"`{flag}` (sets {_text(known.flag_value)})"
        elif flag:
            flag = f"`{flag}`"
        help_ = known.field.spec.help.replace("|", "\\|")
        lines.append(f"| `{known.path}` | `{known.env}` | {flag} | {known.field.requirement} | "
                     f"{_cell(known.default)} | {help_} |")
    lines += ["", "Between settings: " + "; ".join(
        f"`{rule.subject}` {rule.words} `{rule.other}`" + (f" ({rule.why})" if rule.why else "") for rule in RULES)
        + ". Removed: " + "; ".join(f"`{key}` ({why})" for key, why in REMOVED.items()) + ". Per server only "
        "(refused under `exbe.defaults` and as `EXBE_*` variables): "
        + "; ".join(f"`{key}` ({why})" for key, why in PER_SERVER_ONLY.items()) + "."]
    lines += ["", "Keys of an inventory entry:", "", "| key | value | what it is |", "|---|---|---|"]
    for item in fields_of(Entry):
        assert isinstance(item, Field)
        lines.append(f"| `{item.name}` | {item.requirement} | {item.spec.help} |")
    lines += ["", "Other variables exbe reads:", "", "| variable | what it is |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in OTHER_VARIABLES.items()]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- generated from exbe/settings.py: python -m exbe.settings --write docs/configuration.md -->"
END = "<!-- end of the generated part -->"


def with_tables(document: str) -> str:
    """``document`` with the part between :data:`BEGIN` and :data:`END` generated anew."""
    head, begin, rest = document.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no generated part (between {BEGIN!r} and {END!r})")
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"


def main(argv: Sequence[str]) -> int:
    """``python -m exbe.settings [--write] FILE``: print the tables, or regenerate them in FILE."""
    if len(argv) == 2 and argv[0] == "--write":
        with open(argv[1], encoding="utf-8") as handle:
            document = handle.read()
        with open(argv[1], "w", encoding="utf-8", newline="\n") as handle:
            handle.write(with_tables(document))
        return 0
    if not argv:
        sys.stdout.write(markdown())
        return 0
    print("usage: python -m exbe.settings [--write docs/configuration.md]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
