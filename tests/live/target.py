"""The live host the ``live`` suite talks to, from ``EXBE_LIVE_*`` variables, and how the suite runs exbe against it.

The suite drives exbe as an administrator does: it writes an ``exbe.yaml`` with one inventory entry for the host
and runs the ``exbe`` program (:class:`exbe.main.ExbeProgram`, what the ``exbe`` command runs) with
``EXBE_USERNAME``/``EXBE_PASSWORD``, then reads the JSON record and JUnit that command wrote. Nothing else of exbe
talks to the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from exbe.main import ExbeProgram

#: Every variable the suite reads, with what it means (docs/live-testing.md shows this table).
VARIABLES = {
    "EXBE_LIVE_HOST": "WinRM host name or address; the suite is skipped unless it is set",
    "EXBE_LIVE_NAME": "the Exchange server name (`--server`, `Get-ExchangeServer -Identity`); default: the host",
    "EXBE_LIVE_USERNAME": "the account exbe connects as (given to exbe as EXBE_USERNAME)",
    "EXBE_LIVE_PASSWORD": "its password (given to exbe as EXBE_PASSWORD; never printed)",
    "EXBE_LIVE_AUTH": "authentication: negotiate (default), ntlm, kerberos, basic (HTTPS only)",
    "EXBE_LIVE_SSL": "1: WinRM over HTTPS (port 5986 unless EXBE_LIVE_PORT)",
    "EXBE_LIVE_PORT": "WinRM port, when not 5985/5986",
    "EXBE_LIVE_CA_FILE": "PEM file of the CA (or the self-signed certificate) of the WinRM HTTPS listener",
    "EXBE_LIVE_BACKEND_PORT": "Exchange Back End's https port probed by verify, when not 444",
    "EXBE_LIVE_EXCHANGE": "1: the host is an Exchange server whose endpoint (http://host/PowerShell) exbe must use",
    "EXBE_LIVE_EXCHANGE_PORT": "port of the Exchange endpoint, when not 80",
    "EXBE_LIVE_ALLOW_CHANGES": "1: run the tests that change the host (renew, trust, bind, restart IIS, cleanup)",
    "EXBE_LIVE_UNUSABLE_THUMBPRINTS": "comma list of certificates in LocalMachine\\My without a usable private key; "
                                      "with changes allowed, binding each must be refused",
}

_TRUE = ("1", "true", "yes", "on")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


@dataclasses.dataclass(frozen=True)
class LiveTarget:
    """The host of a live run, as the variables describe it."""

    host: str
    name: str
    username: str | None
    password: str | None
    auth: str | None
    ssl: bool
    port: int | None
    ca_file: str | None
    backend_port: int | None
    exchange: bool
    exchange_port: int | None
    allow_changes: bool
    unusable_thumbprints: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LiveTarget | None:
        """The target, or None when ``EXBE_LIVE_HOST`` is not set (the suite then skips)."""
        host = env.get("EXBE_LIVE_HOST", "").strip()
        if not host:
            return None

        def number(name: str) -> int | None:
            text = env.get(name, "").strip()
            return int(text) if text else None

        return cls(
            host=host,
            name=env.get("EXBE_LIVE_NAME", "").strip() or host,
            username=env.get("EXBE_LIVE_USERNAME") or None,
            password=env.get("EXBE_LIVE_PASSWORD") or None,
            auth=env.get("EXBE_LIVE_AUTH", "").strip() or None,
            ssl=_flag(env, "EXBE_LIVE_SSL"),
            port=number("EXBE_LIVE_PORT"),
            # exbe runs in a directory of the suite's own: a relative path is the caller's
            ca_file=str(Path(env["EXBE_LIVE_CA_FILE"].strip()).resolve()) if env.get("EXBE_LIVE_CA_FILE", "").strip()
            else None,
            backend_port=number("EXBE_LIVE_BACKEND_PORT"),
            exchange=_flag(env, "EXBE_LIVE_EXCHANGE"),
            exchange_port=number("EXBE_LIVE_EXCHANGE_PORT"),
            allow_changes=_flag(env, "EXBE_LIVE_ALLOW_CHANGES"),
            unusable_thumbprints=tuple(t.strip().upper() for t in env.get("EXBE_LIVE_UNUSABLE_THUMBPRINTS", "")
                                       .split(",") if t.strip()),
        )

    def inventory_entry(self) -> dict[str, Any]:
        """The one ``exbe.inventory`` entry for this host. Without ``EXBE_LIVE_EXCHANGE`` the Exchange endpoint keeps
        exbe's defaults (``http://host/PowerShell``): on a Windows server without Exchange, IIS answers 404 there and
        exbe works from WinRM alone (renewal by ``New-SelfSignedCertificate -CloneCert``), as on a server whose
        endpoint is down."""
        entry: dict[str, Any] = {"name": self.name, "host": self.host, "ssl": self.ssl}
        optional = {"auth": self.auth, "port": self.port, "ca_file": self.ca_file, "backend_port": self.backend_port,
                    "exchange_port": self.exchange_port}
        entry.update({key: value for key, value in optional.items() if value is not None})
        if self.auth == "basic":
            entry["exchange_ssl"] = True  # exbe refuses Basic over plain HTTP on either endpoint
        return entry

    def write_config(self, path: Path, **defaults: Any) -> Path:
        """An ``exbe.yaml`` (JSON is YAML) with this host as the only server."""
        document = {"exbe": {"inventory": [self.inventory_entry()], "defaults": defaults}}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path


@dataclasses.dataclass
class ExbeRun:
    """One ``exbe`` command and what it left: exit code, output, and its JSON record and JUnit (when asked for)."""

    argv: list[str]
    code: int
    out: str
    err: str
    record: dict[str, Any] | None
    junit: str | None

    @property
    def server(self) -> dict[str, Any]:
        assert self.record is not None, f"{' '.join(self.argv)} wrote no JSON record:\n{self.out}\n{self.err}"
        servers: list[dict[str, Any]] = self.record["servers"]
        assert len(servers) == 1, servers
        return servers[0]

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        """The server's steps by name (each step runs once per task)."""
        return {step["step"]: step for step in self.server["steps"]}

    def step(self, name: str) -> dict[str, Any]:
        steps = self.steps
        assert name in steps, f"no {name} step in {' '.join(self.argv)}: {self.explain()}"
        return steps[name]

    def checks(self) -> dict[str, dict[str, Any]]:
        return {check["id"]: check for check in self.step("verify")["checks"]}

    def explain(self) -> str:
        """The command's output, for an assertion message."""
        return f"exit {self.code}\n{self.out}\n{self.err}"


@contextlib.contextmanager
def _environment(target: LiveTarget) -> Iterator[None]:
    """The process environment of one exbe command: the credentials in EXBE_USERNAME/EXBE_PASSWORD, no other EXBE_*
    setting and no CI platform variable (the command's reports must not land in the caller's job summary)."""
    saved = dict(os.environ)
    for name in [name for name in os.environ if name.startswith(("EXBE_", "GITHUB_", "TF_BUILD", "SYSTEM_"))]:
        del os.environ[name]
    for name, value in (("EXBE_USERNAME", target.username), ("EXBE_PASSWORD", target.password)):
        if value:
            os.environ[name] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_exbe(target: LiveTarget, config: Path, workdir: Path, *args: str) -> ExbeRun:
    """``exbe -f CONFIG ARGS --json … --junit …``: the exbe program (``exbe.main``) as the command line runs it, in
    this process, with its output captured; the password must appear in none of what it wrote."""
    count = len(list(workdir.glob("run*.json")))
    record_path, junit_path = workdir / f"run{count}.json", workdir / f"run{count}.xml"
    argv = ["exbe", "-f", str(config), *args, "--json", str(record_path), "--junit", str(junit_path)]
    out, err = io.StringIO(), io.StringIO()
    with _environment(target), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ExbeProgram().run(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    record_text = record_path.read_text(encoding="utf-8") if record_path.exists() else None
    junit = junit_path.read_text(encoding="utf-8") if junit_path.exists() else None
    run = ExbeRun(["exbe", *args], code, out.getvalue(), err.getvalue(),
                  json.loads(record_text) if record_text else None, junit)
    if target.password:
        for where, text in (("stdout", run.out), ("stderr", run.err), ("JSON record", record_text or ""),
                            ("JUnit", junit or "")):
            assert target.password not in text, f"the password appeared in the {where} of {' '.join(run.argv)}"
    return run
