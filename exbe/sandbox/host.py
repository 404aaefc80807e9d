"""One simulated Exchange server: its state, faults, request counters, shells and listeners.

The host is the :class:`~exbe.sandbox.psrp.Executor` of its shells: on the WinRM endpoint it recognises exbe's
rendered step scripts and applies them to the state in Python; on the Exchange endpoint it runs the modelled Exchange
cmdlets. Anything else ends in a terminating error: the sandbox never fakes a success.

The Exchange endpoint (``/PowerShell``) is an IIS application: when a step stops IIS (iisreset, Restart-Service
W3SVC/WAS), every Exchange shell of the host ends and the next request on one gets the WSMan fault of a shell that
does not exist; WinRM's shells (the WinRM service, not IIS) survive.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import contract
from . import exchange, steps, windows
from .faults import Faults, runspace_lost
from .psrp import DropConnection, Shell
from .records import (
    NO_LANGUAGE_MESSAGE,
    SECOND_HOP_MESSAGE,
    UNRECOGNISED_SCRIPT_MESSAGE,
    ErrorInfo,
    Outcome,
    RunspaceLost,
    TerminatingError,
)
from .state import HostState

log = logging.getLogger("exbe.sandbox")

EXCHANGE_CONFIGURATION = "Microsoft.Exchange"

_SECOND_HOP = re.compile(r"New-PSSession\b[^\n]*(Microsoft\.Exchange|/PowerShell)", re.IGNORECASE)


class SandboxHost:
    """State and behaviour of one sandbox Exchange server (thread-safe)."""

    def __init__(self, name: str, state: HostState, state_path: Path, *, username: str, password: str,
                 faults: Faults | None = None) -> None:
        self.name = name
        self.state = state
        self.state_path = state_path
        self.username = username
        self.password = password
        self.faults = faults or Faults()
        self.lock = threading.RLock()
        self._shells: dict[str, Shell] = {}
        self._counts: dict[str, collections.Counter[str]] = {"winrm": collections.Counter(),
                                                             "exchange": collections.Counter(),
                                                             "other": collections.Counter()}
        self._requests = 0
        self._endpoint_requests: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()
        self._iis_restarts_seen = state.iis_restarts

    # -- observability -----------------------------------------------------------------------------------------------
    def next_request_number(self) -> int:
        with self._count_lock:
            self._requests += 1
            return self._requests

    def next_endpoint_request_number(self, endpoint: str) -> int:
        """The number of this HTTP request among those on ``endpoint`` (what the drop_request fault counts)."""
        with self._count_lock:
            self._endpoint_requests[endpoint] += 1
            return self._endpoint_requests[endpoint]

    def count(self, endpoint: str, action: str) -> None:
        with self._count_lock:
            self._counts[endpoint][action] += 1
        log.debug("%s %s %s", self.name, endpoint, action)

    def request_counts(self) -> dict[str, dict[str, int]]:
        """HTTP requests seen per endpoint (``winrm``/``exchange``) and WSMan action (plus ``auth``)."""
        with self._count_lock:
            return {ep: dict(c) for ep, c in self._counts.items() if ep != "other" or c}

    def total_requests(self, endpoint: str) -> int:
        with self._count_lock:
            return sum(self._counts[endpoint].values())

    def reset_counts(self) -> None:
        with self._count_lock:
            for counter in self._counts.values():
                counter.clear()
            self._requests = 0
            self._endpoint_requests.clear()

    # -- shells ------------------------------------------------------------------------------------------------------
    def open_shell(self, configuration: str) -> Shell:
        shell = Shell(configuration, self)
        with self.lock:
            self._shells[shell.id] = shell
        return shell

    def shell(self, shell_id: str) -> Shell | None:
        with self.lock:
            return self._shells.get(shell_id.upper())

    def close_shell(self, shell_id: str) -> None:
        with self.lock:
            shell = self._shells.pop(shell_id.upper(), None)
        if shell is not None:
            shell.delete()

    def _end_exchange_shells_if_iis_stopped(self) -> None:
        """After a step: when it stopped IIS (``state.iis_restarts`` moved), end the Exchange shells. Called outside
        the host lock: a pipeline running in a shell holds that shell's lock and then takes the host lock."""
        with self.lock:
            stopped = self.state.iis_restarts != self._iis_restarts_seen
            self._iis_restarts_seen = self.state.iis_restarts
        if stopped:
            self.end_exchange_shells()

    def end_exchange_shells(self) -> None:
        """IIS stopped: the Exchange endpoint's runspace pools are gone (their ids now get the missing-shell fault)."""
        with self.lock:
            ended = [s for s in self._shells.values() if s.configuration == EXCHANGE_CONFIGURATION]
            for shell in ended:
                del self._shells[shell.id]
        for shell in ended:
            shell.delete()
        if ended:
            log.info("%s: IIS stopped, %d Exchange runspace pool(s) ended", self.name, len(ended))

    def web_sites_running(self) -> bool:
        """W3SVC runs, so IIS applications (the Exchange endpoint among them) answer. Stopped, they answer 503, as
        the 444 listener does (belief: exchange-backend.md's "500 or 503 when not"; no capture of the endpoint)."""
        with self.lock:
            return windows.service_status(self.state, "W3SVC") == "Running"

    def close_all_shells(self) -> None:
        with self.lock:
            shells, self._shells = list(self._shells.values()), {}
        for shell in shells:
            shell.delete()

    # -- state -------------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state as JSON data (what tests compare before and after)."""
        with self.lock:
            snapshot: dict[str, Any] = json.loads(json.dumps(self.state.to_dict()))
            return snapshot

    def save(self) -> None:
        with self.lock:
            self.state.save(self.state_path)

    # -- execution (psrp.Executor) -----------------------------------------------------------------------------------
    def execute(self, configuration: str, statement: list[tuple[str, bool, dict[str, Any]]],
                runspace_id: uuid.UUID) -> Outcome:
        if configuration == EXCHANGE_CONFIGURATION:
            return self._run_exchange(statement, runspace_id)
        return self._run_winrm(statement)

    def _run_exchange(self, statement: list[tuple[str, bool, dict[str, Any]]], runspace_id: uuid.UUID) -> Outcome:
        if any(is_script for _, is_script, _ in statement):
            raise TerminatingError(ErrorInfo(NO_LANGUAGE_MESSAGE, error_id="ScriptsNotAllowed",
                                             category="ParserError",
                                             exception_type="System.Management.Automation.ParseException"))
        failing = self.faults.step_fail
        name = next((n for n, _, _ in statement if failing and failing.lower() == n.lower()), None)
        if name is not None:
            raise TerminatingError(ErrorInfo(f"{name} failed (fault injected by the exbe sandbox).",
                                             error_id=f"SandboxFault,{name}", activity=name))
        lost = self.faults.runspace_lost
        if lost and any(lost.lower() == n.lower() for n, _, _ in statement):
            raise RunspaceLost(runspace_lost(lost))
        commands = [(name, params) for name, _, params in statement]
        return self._mutate(lambda: exchange.run_pipeline(self.state, commands, self.faults,
                                                          runspace_id=runspace_id))

    def _run_winrm(self, statement: list[tuple[str, bool, dict[str, Any]]]) -> Outcome:
        # pypsrp's Client.execute_ps sends `Invoke-Expression -Command <script> | Out-String -Stream`: model both
        # cmdlets (our step outputs are strings already, so Out-String passes them through).
        if len(statement) == 2 and statement[1][0].lower() == "out-string" and not statement[1][1]:
            statement = statement[:1]
        name, is_cmdlet_script, params = statement[0]
        if not is_cmdlet_script and name.lower() == "invoke-expression" and isinstance(params.get("Command"), str):
            statement = [(params["Command"], True, {})]
        text, is_script, _ = statement[0]
        if len(statement) != 1 or not is_script:
            raise TerminatingError(ErrorInfo(UNRECOGNISED_SCRIPT_MESSAGE.format(
                reason="a command or a pipeline of commands, not one exbe step script"),
                error_id="SandboxCannotExecute", category="NotImplemented"))
        if _SECOND_HOP.search(text):
            raise TerminatingError(ErrorInfo(SECOND_HOP_MESSAGE.format(server=self.name),
                                             error_id="-2144108387,PSSessionOpenFailed",
                                             category="OpenError",
                                             exception_type="System.Management.Automation.Remoting.PSRemotingTransportException"))
        from ..render import is_exbe_rendering  # jinja2 is loaded only when a script arrives

        recognised, reason = is_exbe_rendering(text)
        if not recognised:
            raise TerminatingError(ErrorInfo(UNRECOGNISED_SCRIPT_MESSAGE.format(reason=reason),
                                             error_id="SandboxCannotExecute", category="NotImplemented"))
        step, data = contract.parse_script(text)
        if self.faults.runspace_lost == step:
            raise RunspaceLost(runspace_lost(step))
        if self.faults.step_fail == step:
            raise TerminatingError(ErrorInfo(f"The exbe step '{step}' failed: fault injected by the exbe sandbox.",
                                             error_id=f"SandboxFault,{step}"))
        try:
            outcome = self._mutate(lambda: Outcome(output=[contract.encode_result(
                steps.run_step(self.state, step, data, self.faults))]))
        finally:
            self._end_exchange_shells_if_iis_stopped()
        if self.faults.drop_in_step == step:
            raise DropConnection(step)
        return outcome

    def _mutate(self, action: Callable[[], Outcome]) -> Outcome:
        """Run ``action`` under the host lock and persist the state when it changed."""
        with self.lock:
            before = self.state.to_dict()  # a deep copy (dataclasses.asdict)
            try:
                return action()
            finally:
                if self.state.to_dict() != before:
                    self.state.save(self.state_path)
